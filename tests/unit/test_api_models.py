"""POST /ask's request model: every malformed body gets one RequestError line naming the field; valid ones parse."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag_e2e.inference.api_models import RequestError, ask_request_model, parse_ask

MODEL = ask_request_model(max_questions=3, max_question_chars=10, max_k=5)


def _refusal(payload) -> tuple[int, str]:
    with pytest.raises(RequestError) as err:
        parse_ask(json.dumps(payload).encode(), MODEL)
    return err.value.status, err.value.message


@pytest.mark.parametrize("payload, status, message", [
    ({"question": "a", "k": True}, 422, "`k` must be an integer in [1, 5], got true"),
    ({"question": "a", "k": 2.0}, 422, "`k` must be an integer in [1, 5], got 2.0"),
    ({"question": "a", "k": 6}, 422, "`k` must be an integer in [1, 5], got 6"),
    ({"questions": ["a", "  "]}, 422, "`questions[1]` must be a non-empty string"),
    ({"questions": ["a", 3]}, 422, "`questions[1]` must be a non-empty string"),
    ({"questions": []}, 422, "`questions` must be a non-empty list of strings"),
    ({"questions": "abc"}, 422, "`questions` must be a non-empty list of strings"),
    ({"questions": ["q"] * 4}, 422, "`questions` has 4 entries; at most 3"),
    ({"question": "x" * 11}, 422, "`question` has 11 characters; at most 10"),
    ({}, 422, "give exactly one of `question` (a string) or `questions` (a list of strings)"),
    ({"question": "a", "questions": ["b"]}, 422, "give exactly one of"),
    ({"question": "a", "k": "x", "top": 1}, 400, 'unknown field "top" (fields: question or questions, k)'),
    ([1], 400, "body must be a JSON object, got list"),
    ({"question": "a", "\n": 1}, 400, 'unknown field "\\n" (fields'),  # found by the fuzz below: was 2 lines
    ({"question": "a", "x" * 200: 1}, 400, 'unknown field "' + "x" * 55 + '..." (fields'),
])
def test_each_malformed_request_gets_one_line_naming_the_field(payload, status, message):
    got_status, got = _refusal(payload)
    assert got_status == status and got.startswith(message) and "\n" not in got


def test_valid_requests_parse():
    assert parse_ask(b'{"question": "who?"}', MODEL).batch == ["who?"]
    request = parse_ask(b'{"questions": ["a", "b"], "k": 5}', MODEL)
    assert (request.batch, request.k, request.question) == (["a", "b"], 5, None)


def test_the_schema_shows_the_servers_limits():
    props = MODEL.model_json_schema()["properties"]
    assert {"maximum": 5, "minimum": 1, "type": "integer"} in props["k"]["anyOf"]
    array = next(s for s in props["questions"]["anyOf"] if s.get("type") == "array")
    assert (array["maxItems"], array["items"]["maxLength"]) == (3, 10)
    assert MODEL.model_json_schema()["additionalProperties"] is False


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
fields = st.fixed_dictionaries({}, optional={"question": json_values, "questions": json_values, "k": json_values,
                                             "extra": json_values})


@settings(max_examples=300, deadline=None)
@given(st.one_of(fields, json_values))
def test_any_json_body_parses_or_gets_one_clear_line(payload):
    try:
        request = parse_ask(json.dumps(payload).encode(), MODEL)
    except RequestError as err:
        assert err.status in (400, 422) and err.message and len(err.message.splitlines()) == 1
        return
    assert 1 <= len(request.batch) <= 3 and all(q.strip() and len(q) <= 10 for q in request.batch)
    assert request.k is None or 1 <= request.k <= 5


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_parse_or_get_one_clear_line(body):
    try:
        parse_ask(body, MODEL)
    except RequestError as err:
        assert err.status in (400, 422) and "\n" not in err.message
