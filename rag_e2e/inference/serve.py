"""`rag-e2e serve <dir>`: an HTTP JSON API over a `RagPipeline` (FastAPI + uvicorn), a thin layer over `ask`.

    POST /ask    {"question": "...", "k": 5}      -> one answer: {"question", "answer", "passages": [...]}
                 {"questions": ["...", ...], "k": 5} -> {"answers": [...]}
    GET  /health -> {"status": "ok", "passages": N, ...}

Malformed requests get a 4xx whose JSON body says what is wrong ({"error": "..."}): 400 for a body that is not a
JSON object or has unknown fields, 413 for a body over `max_body_bytes`, 422 for a missing or out-of-range field.

Concurrent requests are batched: a request waits at most `max_wait_ms` for others to join, and up to `max_batch`
questions with the same k go through the model in one call. The model runs on one worker thread, so calls never
overlap (the pipeline is not thread-safe) while the event loop keeps accepting requests.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from rag_e2e.inference.pipeline import Answer, RagPipeline


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for, and how requests are batched."""

    max_body_bytes: int = 64 * 1024
    max_questions: int = 32  # questions in one request
    max_question_chars: int = 2000
    max_k: int = 20  # also capped at the corpus size
    max_batch: int = 16  # questions per model call
    max_wait_ms: float = 5.0  # how long a request waits for others to batch with

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_questions", "max_question_chars", "max_k", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"set `{name}` >= 1")
        if self.max_wait_ms < 0:
            raise ValueError("set `max_wait_ms` >= 0")


class RequestError(Exception):
    """A request the server refuses: HTTP `status` and a message saying what is wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def parse_ask(body: bytes, limits: ServeLimits, default_k: int, corpus_size: int) -> tuple[list[str], int, bool]:
    """(questions, k, single) from a POST /ask body, or a RequestError naming the field at fault."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"body is not valid JSON: {getattr(err, 'msg', err)}") from None
    if not isinstance(payload, dict):
        raise RequestError(400, f"body must be a JSON object, got {type(payload).__name__}")
    unknown = sorted(set(payload) - {"question", "questions", "k"})
    if unknown:
        raise RequestError(400, f"unknown field `{unknown[0]}` (fields: question or questions, k)")
    if ("question" in payload) == ("questions" in payload):
        raise RequestError(422, "give exactly one of `question` (a string) or `questions` (a list of strings)")
    single = "question" in payload
    questions = [payload["question"]] if single else payload["questions"]
    if not isinstance(questions, list) or not questions:
        raise RequestError(422, "`questions` must be a non-empty list of strings")
    if len(questions) > limits.max_questions:
        raise RequestError(422, f"`questions` has {len(questions)} entries; at most {limits.max_questions}")
    name = "question" if single else "questions[{i}]"
    for i, q in enumerate(questions):
        if not isinstance(q, str) or not q.strip():
            raise RequestError(422, f"`{name.format(i=i)}` must be a non-empty string")
        if len(q) > limits.max_question_chars:
            raise RequestError(422, f"`{name.format(i=i)}` has {len(q)} characters; at most "
                                    f"{limits.max_question_chars}")
    k = payload.get("k", default_k)
    max_k = min(limits.max_k, corpus_size)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= max_k:
        raise RequestError(422, f"`k` must be an integer in [1, {max_k}], got {json.dumps(k)}")
    return questions, k, single


@dataclass
class _Pending:
    questions: list[str]
    k: int
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Collects concurrent requests into model calls of up to `max_batch` questions sharing one k."""

    def __init__(self, pipeline: RagPipeline, max_batch: int, max_wait_s: float):
        self.pipeline, self.max_batch, self.max_wait_s = pipeline, max_batch, max_wait_s
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rag-model")
        self.calls = self.questions_answered = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.worker.shutdown(wait=True)

    async def ask(self, questions: list[str], k: int) -> list[Answer]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(questions, k, future))
        return await future

    async def _collect(self) -> list[_Pending]:
        """The next request, and whatever else arrives within `max_wait_s`, up to `max_batch` questions."""
        batch = [await self.queue.get()]
        size, deadline = len(batch[0].questions), time.monotonic() + self.max_wait_s
        while size < self.max_batch:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                item = await asyncio.wait_for(self.queue.get(), timeout)
            except asyncio.TimeoutError:
                break
            batch.append(item)
            size += len(item.questions)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            for k in dict.fromkeys(item.k for item in batch):  # answers depend on k: one call per k
                group = [item for item in batch if item.k == k]
                questions = [q for item in group for q in item.questions]
                try:
                    answers = await loop.run_in_executor(self.worker, self.pipeline.ask, questions, k)
                except Exception as err:  # the request fails, the server stays up
                    for item in group:
                        if not item.future.done():
                            item.future.set_exception(err)
                    continue
                self.calls += 1
                self.questions_answered += len(questions)
                start = 0
                for item in group:
                    if not item.future.done():  # a client that went away has a cancelled future
                        item.future.set_result(answers[start : start + len(item.questions)])
                    start += len(item.questions)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing one over `limit` bytes without reading past the limit (Content-Length may be absent)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body is {declared} bytes; at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(pipeline: RagPipeline, limits: ServeLimits | None = None) -> FastAPI:
    """The FastAPI app serving `pipeline` (run it with uvicorn; see `serve`)."""
    limits = limits or ServeLimits()
    batcher = Batcher(pipeline, limits.max_batch, limits.max_wait_ms / 1000)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="rag_e2e", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(RequestError)
    async def refuse(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "passages": pipeline.index.size, "index": pipeline.index.kind,
                "default_k": pipeline.settings.k, "max_k": min(limits.max_k, pipeline.index.size),
                "max_questions": limits.max_questions, "model_calls": batcher.calls,
                "questions_answered": batcher.questions_answered}

    @app.post("/ask")
    async def ask(request: Request) -> JSONResponse:
        body = await _read_body(request, limits.max_body_bytes)
        questions, k, single = parse_ask(body, limits, pipeline.settings.k, pipeline.index.size)
        try:
            answers = await batcher.ask(questions, k)
        except Exception as err:
            return JSONResponse({"error": f"the model failed: {type(err).__name__}: {err}"}, status_code=500)
        if single:
            return JSONResponse(answers[0].to_dict())
        return JSONResponse({"answers": [a.to_dict() for a in answers]})

    return app


@contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", timeout_s: float = 60.0) -> Iterator[str]:
    """Serve `app` on a free port in a background thread; yields its base URL, and stops it on exit (benchmarks,
    tests)."""
    import uvicorn

    sock = socket.socket()
    sock.bind((host, 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()


def serve(pipeline: RagPipeline, host: str = "127.0.0.1", port: int = 8000, limits: ServeLimits | None = None,
          ) -> None:
    """Serve until interrupted."""
    import uvicorn

    uvicorn.run(create_app(pipeline, limits), host=host, port=port, log_level="info")
