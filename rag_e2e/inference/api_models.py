"""The HTTP API's request and response models (pydantic): what `rag-e2e serve` documents at /docs and /openapi.json.

The request model carries the server's limits (questions per request, characters per question, k), so it is built
per app by `ask_request_model`. A request that fails it gets one line naming the field (`parse_ask`), not pydantic's
list of errors.
"""

from __future__ import annotations

import json
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, create_model, model_validator


class RequestError(Exception):
    """A request the server refuses: HTTP `status` and a message saying what is wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Citation(BaseModel):
    rank: int = Field(description="1 = best")
    pid: str
    title: str
    text: str
    score: float = Field(description="inner product of the query and passage vectors")


class AnswerOut(BaseModel):
    question: str
    answer: str
    passages: list[Citation]


class AnswersOut(BaseModel):
    answers: list[AnswerOut]


class ErrorOut(BaseModel):
    error: str = Field(description="one line saying what is wrong")


class HealthOut(BaseModel):
    status: str
    passages: int
    index: str
    default_k: int
    max_k: int
    max_questions: int
    model_calls: int
    questions_answered: int
    model_seconds: float  # time inside model calls: model_seconds / questions_answered is the answer cost
    questions_waiting: int
    max_queue: int
    shed_503: int
    timed_out_504: int


class ReadyOut(BaseModel):
    ready: bool


class AskRequest(BaseModel):
    """POST /ask: one `question`, or a batch of `questions`, and optionally `k`."""

    model_config = ConfigDict(extra="forbid")
    limits: ClassVar[dict[str, int]] = {}  # k, questions, chars: set by `ask_request_model`
    question: str | None = None
    questions: list[str] | None = None
    k: int | None = Field(None, description="passages to retrieve and read (default: the pipeline's k)")

    @model_validator(mode="after")
    def _exactly_one(self) -> AskRequest:
        if (self.question is None) == (self.questions is None):
            raise ValueError("give exactly one of `question` (a string) or `questions` (a list of strings)")
        return self

    @property
    def batch(self) -> list[str]:
        return [self.question] if self.question is not None else list(self.questions or [])


def ask_request_model(max_questions: int, max_question_chars: int, max_k: int) -> type[AskRequest]:
    """`AskRequest` with this server's limits, which its JSON schema shows."""
    question = Annotated[str, StringConstraints(min_length=1, max_length=max_question_chars, pattern=r"\S")]
    model = create_model(
        "AskRequest", __base__=AskRequest, __doc__=AskRequest.__doc__,
        question=(question | None, None),
        questions=(Annotated[list[question], Field(min_length=1, max_length=max_questions)] | None, None),
        k=(Annotated[int, Field(strict=True, ge=1, le=max_k)] | None, AskRequest.model_fields["k"]))
    model.limits = {"k": max_k, "questions": max_questions, "chars": max_question_chars}
    return model


def parse_ask(body: bytes, model: type[AskRequest]) -> AskRequest:
    """The request in a POST /ask body, or a RequestError whose one line names the field at fault."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"body is not valid JSON: {getattr(err, 'msg', err)}") from None
    if not isinstance(payload, dict):
        raise RequestError(400, f"body must be a JSON object, got {type(payload).__name__}")
    try:
        return model.model_validate(payload)
    except ValidationError as err:
        raise _one_line(err, model) from None


def _one_line(err: ValidationError, model: type[AskRequest]) -> RequestError:
    """The first thing wrong, said in one line (unknown fields first: they are 400, the rest 422)."""
    errors = err.errors(include_url=False)
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        # the client's own name, JSON-escaped (a name may hold a newline) and cut: still one short line
        name = json.dumps(str(unknown[0]["loc"][0]))
        name = name if len(name) <= 60 else name[:56] + '..."'
        return RequestError(400, f"unknown field {name} (fields: question or questions, k)")
    e, limits = errors[0], model.limits
    loc = e["loc"]
    if not loc:  # the model validator
        return RequestError(422, e["msg"].removeprefix("Value error, "))
    if loc[0] == "k":
        return RequestError(422, f"`k` must be an integer in [1, {limits['k']}], got {json.dumps(e['input'])}")
    if loc == ("questions",):
        if e["type"] == "too_long":
            return RequestError(422, f"`questions` has {len(e['input'])} entries; at most {limits['questions']}")
        return RequestError(422, "`questions` must be a non-empty list of strings")
    name = "question" if loc[0] == "question" else f"questions[{loc[1]}]"
    if e["type"] == "string_too_long":
        return RequestError(422, f"`{name}` has {len(e['input'])} characters; at most {limits['chars']}")
    return RequestError(422, f"`{name}` must be a non-empty string")

