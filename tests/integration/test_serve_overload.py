"""`rag-e2e serve` under overload: 503 + Retry-After past max_queue, 504 past the deadline, /ready, bearer auth."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from helpers import tiny_config

from rag_e2e.inference.export import pipeline_from_config
from rag_e2e.inference.serve import ServeLimits, create_app, is_loopback, running


class SlowPipeline:
    """The tiny pipeline, its answers delayed by `delay_s` per model call (a model far slower than its clients)."""

    def __init__(self, pipeline, delay_s: float):
        self._pipeline, self.delay_s, self.calls = pipeline, delay_s, 0
        self.lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._pipeline, name)

    def ask(self, questions, k):
        with self.lock:
            self.calls += 1
        time.sleep(self.delay_s)
        return self._pipeline.ask(questions, k)


@pytest.fixture(scope="module")
def pipeline():
    return pipeline_from_config(tiny_config())


def test_past_max_queue_requests_get_503_with_retry_after_and_the_admitted_are_answered(pipeline):
    slow = SlowPipeline(pipeline, 0.3)
    limits = ServeLimits(max_questions=2, max_queue=2, max_batch=1, max_wait_ms=0, request_timeout_s=30)
    with running(create_app(slow, limits)) as url:
        def ask(i):
            return httpx.post(f"{url}/ask", json={"question": f"question {i}?"}, timeout=30)

        with ThreadPoolExecutor(12) as pool:
            replies = list(pool.map(ask, range(12)))
        health = httpx.get(f"{url}/health", timeout=30).json()
    codes = [r.status_code for r in replies]
    assert set(codes) <= {200, 503} and codes.count(200) >= 2 and codes.count(503) >= 1, codes
    for r in replies:
        body = r.json()
        if r.status_code == 503:
            assert int(r.headers["retry-after"]) >= 1 and body["error"].startswith("server overloaded:")
            assert "Traceback" not in r.text
        else:
            assert set(body) == {"question", "answer", "passages"}
    assert health["shed_503"] == codes.count(503) and health["questions_waiting"] == 0
    assert slow.calls == codes.count(200)  # a shed request never reached the model


def test_with_a_queue_wait_budget_answered_requests_never_wait_past_it(pipeline):
    delay_s, budget_s = 0.2, 0.3
    slow = SlowPipeline(pipeline, delay_s)
    limits = ServeLimits(max_batch=1, max_wait_ms=0, max_queue=256, max_queue_wait_ms=1000 * budget_s)
    with running(create_app(slow, limits)) as url:
        def ask(i):
            t0 = time.perf_counter()
            r = httpx.post(f"{url}/ask", json={"question": f"question {i}?"}, timeout=30)
            return r, time.perf_counter() - t0

        with ThreadPoolExecutor(12) as pool:
            first = list(pool.map(ask, range(12)))  # the rate is unmeasured: refused when they waited too long
            second = list(pool.map(ask, range(12)))  # measured: refused at the door
        health = httpx.get(f"{url}/health", timeout=30).json()
    for wave in (first, second):
        codes = [r.status_code for r, _ in wave]
        assert set(codes) <= {200, 503} and codes.count(200) >= 1 and codes.count(503) >= 6, codes
        # answered: at most the budget waiting, then its own call (and one call in flight ahead of it); 0.25 s slack
        assert all(t <= budget_s + 2 * delay_s + 0.25 for r, t in wave if r.status_code == 200)
        for r, _ in wave:
            if r.status_code == 503:
                assert "max_queue_wait_ms=300" in r.json()["error"] and int(r.headers["retry-after"]) >= 1
    assert health["shed_503"] == sum(r.status_code == 503 for r, _ in first + second)
    assert slow.calls == sum(r.status_code == 200 for r, _ in first + second)  # the refused never reached it


def test_past_the_deadline_a_request_gets_504_and_its_queued_questions_are_skipped(pipeline):
    slow = SlowPipeline(pipeline, 0.6)
    limits = ServeLimits(max_batch=1, max_wait_ms=0, request_timeout_s=0.3)
    with running(create_app(slow, limits)) as url:
        with ThreadPoolExecutor(3) as pool:
            replies = list(pool.map(lambda i: httpx.post(f"{url}/ask", json={"question": f"q{i}?"}, timeout=30),
                                    range(3)))
        time.sleep(1.5)  # let the model finish whatever it had started
        health = httpx.get(f"{url}/health", timeout=30).json()
    assert [r.status_code for r in replies] == [504] * 3
    assert all(r.json() == {"error": "no answer within request_timeout_s=0.3 s"} for r in replies)
    assert slow.calls == 1  # the first was running when it timed out; the two queued behind it were dropped
    assert health["timed_out_504"] == 3


def test_ready_health_and_bearer_auth(pipeline):
    with running(create_app(pipeline, ServeLimits(), api_key="s3cret")) as url:
        assert httpx.get(f"{url}/ready", timeout=30).json() == {"ready": True}
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200  # probes need no token
        q = {"question": "where?"}
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic s3cret"}):
            r = httpx.post(f"{url}/ask", json=q, headers=headers, timeout=30)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert r.json()["error"].startswith("missing or wrong bearer token")
        r = httpx.post(f"{url}/ask", json=q, headers={"authorization": "Bearer s3cret"}, timeout=30)
        assert r.status_code == 200 and r.json()["question"] == "where?"


def test_limits_are_checked_and_loopback_is_recognised():
    with pytest.raises(ValueError, match="max_queue"):
        ServeLimits(max_questions=8, max_queue=4)
    with pytest.raises(ValueError, match="request_timeout_s"):
        ServeLimits(request_timeout_s=0)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")


def test_shutdown_lets_the_request_in_flight_finish_and_refuses_new_ones(pipeline):
    import socket

    import uvicorn

    slow = SlowPipeline(pipeline, 1.0)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(slow, ServeLimits(request_timeout_s=10)), log_level="warning",
                                           timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(httpx.post, f"{url}/ask", json={"question": "q?"}, timeout=30)
        while slow.calls == 0:  # the request is inside the model
            time.sleep(0.01)
        server.should_exit = True  # what uvicorn's SIGTERM / SIGINT handler sets
        reply = in_flight.result()
    thread.join(15)
    sock.close()
    assert reply.status_code == 200 and reply.json()["question"] == "q?"
    assert not thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2)
