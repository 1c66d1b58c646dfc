"""`rag-e2e serve <dir>`: an HTTP JSON API over a `RagPipeline` (FastAPI + uvicorn), a thin layer over `ask`.

    POST /ask    {"question": "...", "k": 5}      -> one answer: {"question", "answer", "passages": [...]}
                 {"questions": ["...", ...], "k": 5} -> {"answers": [...]}
    GET  /health -> {"status": "ok", "passages": N, ...}   the process is alive
    GET  /ready  -> {"ready": true} (503 while starting or stopping)   the model is loaded and answering
    GET  /docs, /openapi.json                                          the API, from the models in api_models.py

Malformed requests get a 4xx whose JSON body says what is wrong ({"error": "..."}): 400 for a body that is not a
JSON object or has unknown fields, 413 for a body over `max_body_bytes`, 422 for a missing or out-of-range field,
401 without the bearer token when one is set (`RAG_E2E_API_KEY`).

Overload is shed, not queued without end: past `max_queue` questions admitted and unanswered a request gets 503
with `Retry-After` (seconds, from the measured answer rate); with a `max_queue_wait_ms` budget, so does a request
whose questions ahead would take longer than that, or that waited longer than that unstarted; a request not
answered within `request_timeout_s` gets 504 (its questions are dropped if the model has not started on them).
On SIGTERM uvicorn stops accepting connections and lets the requests in flight finish (up to `request_timeout_s`)
before the model thread stops.

Concurrent requests are batched: a request waits at most `max_wait_ms` for others to join, and up to `max_batch`
questions with the same k go through the model in one call. The model runs on one worker thread, so calls never
overlap (the pipeline is not thread-safe) while the event loop keeps accepting requests.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import math
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from rag_e2e.inference.api_models import (
    AnswerOut,
    AnswersOut,
    ErrorOut,
    HealthOut,
    ReadyOut,
    RequestError,
    ask_request_model,
    parse_ask,
)
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
    max_queue: int = 256  # questions admitted and not yet answered; past it, 503
    request_timeout_s: float = 30.0  # a request's deadline; past it, 504
    # A latency budget for waiting (0: none). A request is refused (503) when the questions ahead of it would take
    # longer than this at the measured answer rate, and dropped (503) if it waited longer than this unstarted.
    max_queue_wait_ms: float = 0.0

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_questions", "max_question_chars", "max_k", "max_batch", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"set `{name}` >= 1")
        if self.max_wait_ms < 0 or self.max_queue_wait_ms < 0:
            raise ValueError("set `max_wait_ms` and `max_queue_wait_ms` >= 0")
        if self.request_timeout_s <= 0:
            raise ValueError("set `request_timeout_s` > 0")
        if self.max_queue < self.max_questions:
            raise ValueError(f"set `max_queue` >= `max_questions` ({self.max_questions}), or no full request fits")


class Overloaded(Exception):
    """Past `max_queue` questions, or past the `max_queue_wait_ms` budget: refused with 503 and `Retry-After`."""

    def __init__(self, why: str, retry_after_s: int):
        super().__init__(f"server overloaded: {why}; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass
class _Pending:
    questions: list[str]
    k: int
    future: asyncio.Future = field(repr=False)
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """Collects concurrent requests into model calls of up to `max_batch` questions sharing one k."""

    def __init__(self, pipeline: RagPipeline, max_batch: int, max_wait_s: float, max_queue: int = 256,
                 max_queue_wait_s: float = 0.0):
        self.pipeline, self.max_batch, self.max_wait_s, self.max_queue = pipeline, max_batch, max_wait_s, max_queue
        self.max_queue_wait_s = max_queue_wait_s
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rag-model")
        self.calls = self.questions_answered = self.admitted = self.shed = self.timed_out = 0
        self.model_s = 0.0  # time inside model calls, for the answer rate behind Retry-After
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.worker.shutdown(wait=True)

    def expected_wait_s(self) -> float:
        """Seconds until the questions admitted now are answered, at the answer rate measured so far (0 unmeasured)."""
        return self.admitted * self.model_s / self.questions_answered if self.questions_answered else 0.0

    def retry_after_s(self) -> int:
        return max(1, math.ceil(self.expected_wait_s()))

    async def ask(self, questions: list[str], k: int, timeout_s: float | None = None) -> list[Answer]:
        """The answers, or Overloaded (nothing queued) past `max_queue`, or TimeoutError past `timeout_s` (the
        request's questions are then skipped if no model call has taken them yet)."""
        if self.admitted + len(questions) > self.max_queue:
            self.shed += 1
            raise Overloaded(f"{self.admitted} questions waiting (max_queue={self.max_queue})", self.retry_after_s())
        if self.max_queue_wait_s and (wait_s := self.expected_wait_s()) > self.max_queue_wait_s:
            self.shed += 1
            raise Overloaded(f"the {self.admitted} questions waiting take about {wait_s:.3g} s "
                             f"(max_queue_wait_ms={1000 * self.max_queue_wait_s:g})", self.retry_after_s())
        self.admitted += len(questions)
        future = asyncio.get_running_loop().create_future()
        try:
            await self.queue.put(_Pending(questions, k, future))
            return await asyncio.wait_for(future, timeout_s)  # on timeout the future is cancelled
        except asyncio.TimeoutError:
            self.timed_out += 1
            raise
        finally:
            self.admitted -= len(questions)

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
            live = [item for item in batch if not item.future.done()]  # timed out or gone while queued: skipped
            if self.max_queue_wait_s:  # waited past the budget unstarted: refused, not answered late
                now, fresh = time.monotonic(), []
                for item in live:
                    if now - item.arrived > self.max_queue_wait_s:
                        self.shed += 1
                        item.future.set_exception(Overloaded(
                            f"waited {now - item.arrived:.3g} s unstarted (max_queue_wait_ms="
                            f"{1000 * self.max_queue_wait_s:g})", self.retry_after_s()))
                    else:
                        fresh.append(item)
                live = fresh
            for k in dict.fromkeys(item.k for item in live):  # answers depend on k: one call per k
                group = [item for item in live if item.k == k]
                questions = [q for item in group for q in item.questions]
                began = time.perf_counter()
                try:
                    answers = await loop.run_in_executor(self.worker, self.pipeline.ask, questions, k)
                except Exception as err:  # the request fails, the server stays up
                    for item in group:
                        if not item.future.done():
                            item.future.set_exception(err)
                    continue
                self.calls += 1
                self.questions_answered += len(questions)
                self.model_s += time.perf_counter() - began
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


def create_app(pipeline: RagPipeline, limits: ServeLimits | None = None, api_key: str | None = None) -> FastAPI:
    """The FastAPI app serving `pipeline` (run it with uvicorn; see `serve`). With `api_key`, POST /ask needs
    `Authorization: Bearer <api_key>` (/health and /ready stay open for probes)."""
    limits = limits or ServeLimits()
    batcher = Batcher(pipeline, limits.max_batch, limits.max_wait_ms / 1000, limits.max_queue,
                      limits.max_queue_wait_ms / 1000)

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

    max_k = min(limits.max_k, pipeline.index.size)
    ask_model = ask_request_model(limits.max_questions, limits.max_question_chars, max_k)
    refusals = {status: {"model": ErrorOut, "description": why} for status, why in (
        (400, "not a JSON object, or an unknown field"), (401, "missing or wrong bearer token"),
        (413, "body over max_body_bytes"), (422, "a missing or out-of-range field"),
        (503, "overloaded (see Retry-After)"), (504, "not answered within request_timeout_s"))}

    @app.get("/health", response_model=HealthOut)
    async def health() -> dict:
        return {"status": "ok", "passages": pipeline.index.size, "index": pipeline.index.kind,
                "default_k": pipeline.settings.k, "max_k": max_k,
                "max_questions": limits.max_questions, "model_calls": batcher.calls,
                "questions_answered": batcher.questions_answered,
                "model_seconds": batcher.model_s, "questions_waiting": batcher.admitted,
                "max_queue": limits.max_queue, "shed_503": batcher.shed, "timed_out_504": batcher.timed_out}

    @app.get("/ready", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": batcher.running}, status_code=200 if batcher.running else 503)

    # The body is read by hand (to refuse an oversized one before reading it all), so its schema is declared here.
    @app.post("/ask", response_model=AnswerOut | AnswersOut, responses=refusals, openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": ask_model.model_json_schema()}}}})
    async def ask(request: Request) -> JSONResponse:
        if api_key is not None and not _bearer_matches(request.headers.get("authorization", ""), api_key):
            return JSONResponse({"error": "missing or wrong bearer token (Authorization: Bearer $RAG_E2E_API_KEY)"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        body = await _read_body(request, limits.max_body_bytes)
        parsed = parse_ask(body, ask_model)
        questions, k = parsed.batch, parsed.k or pipeline.settings.k
        try:
            answers = await batcher.ask(questions, k, limits.request_timeout_s)
        except Overloaded as err:
            return JSONResponse({"error": str(err)}, status_code=503,
                                headers={"Retry-After": str(err.retry_after_s)})
        except asyncio.TimeoutError:
            return JSONResponse({"error": f"no answer within request_timeout_s={limits.request_timeout_s:g} s"},
                                status_code=504)
        except Exception as err:
            return JSONResponse({"error": f"the model failed: {type(err).__name__}: {err}"}, status_code=500)
        if parsed.question is not None:
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


def _bearer_matches(header: str, api_key: str) -> bool:
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(pipeline: RagPipeline, host: str = "127.0.0.1", port: int = 8000, limits: ServeLimits | None = None,
          api_key: str | None = None) -> None:
    """Serve until interrupted (SIGINT/SIGTERM: in-flight requests finish first, up to `request_timeout_s`)."""
    import uvicorn

    limits = limits or ServeLimits()
    if api_key is None and not is_loopback(host):
        print(f"rag-e2e serve: warning: listening on {host} with no auth; anyone who can reach it can query the "
              "model (set RAG_E2E_API_KEY to require a bearer token)", file=sys.stderr)
    uvicorn.run(create_app(pipeline, limits, api_key), host=host, port=port, log_level="info",
                timeout_graceful_shutdown=math.ceil(limits.request_timeout_s))
