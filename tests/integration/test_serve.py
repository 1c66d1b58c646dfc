"""`rag-e2e serve` over loopback: correct answers under concurrent mixed load, 4xx for every malformed request."""

import json
import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from helpers import tiny_config

from rag_e2e.inference.export import pipeline_from_config
from rag_e2e.inference.serve import ServeLimits, create_app, running

LIMITS = ServeLimits(max_body_bytes=4096, max_questions=4, max_question_chars=200, max_k=5, max_batch=8,
                     max_wait_ms=20)


@pytest.fixture(scope="module")
def server():
    """The app on a free loopback port (uvicorn in a thread); yields (base url, pipeline, app)."""
    pipeline = pipeline_from_config(tiny_config())
    app = create_app(pipeline, LIMITS)
    with running(app) as url:
        yield url, pipeline, app


def _malformed(rng: random.Random, questions: list[str]) -> tuple[str, bytes, dict]:
    """(what is wrong, body, headers) of a request the server must refuse with a 4xx."""
    q = rng.choice(questions)
    cases = [
        ("bad json", b'{"question": "where', {}),
        ("not an object", b'["a question"]', {}),
        ("missing question", json.dumps({"k": 2}).encode(), {}),
        ("both fields", json.dumps({"question": q, "questions": [q]}).encode(), {}),
        ("unknown field", json.dumps({"question": q, "top_k": 2}).encode(), {}),
        ("empty question", json.dumps({"question": "  "}).encode(), {}),
        ("question not a string", json.dumps({"question": 7}).encode(), {}),
        ("k too large", json.dumps({"question": q, "k": 6}).encode(), {}),
        ("k zero", json.dumps({"question": q, "k": 0}).encode(), {}),
        ("k not an int", json.dumps({"question": q, "k": "3"}).encode(), {}),
        ("k a bool", json.dumps({"question": q, "k": True}).encode(), {}),
        ("too many questions", json.dumps({"questions": [q] * 5}).encode(), {}),
        ("empty list", json.dumps({"questions": []}).encode(), {}),
        ("question too long", json.dumps({"question": "x" * 201}).encode(), {}),
        ("oversized body", json.dumps({"question": q, "pad": "x" * 5000}).encode(), {}),
        ("not utf-8", b'{"question": "\xff\xfe"}', {}),
    ]
    return rng.choice(cases)


def test_concurrent_mixed_load(server):
    url, pipeline, app = server
    questions = ["where was Timku Tukrol born?", "what is the name of the pet of Ferik Stenkrom?",
                 "who founded the town?", "what is the pet called?", "where was he born?", "name of the pet?"]
    # The reference: each question asked alone through the pipeline (batching must not change an answer).
    expected = {(q, k): pipeline.ask(q, k=k)[0].to_dict() for q in questions for k in (1, 3, 5)}
    rng = random.Random(0)
    plan = []  # (kind, body, headers, expected response or None)
    for _ in range(240):
        if rng.random() < 0.5:
            k = rng.choice((1, 3, 5))
            if rng.random() < 0.5:
                q = rng.choice(questions)
                plan.append(("single", json.dumps({"question": q, "k": k}).encode(), {}, expected[(q, k)]))
            else:
                qs = rng.sample(questions, rng.randint(1, 4))
                want = {"answers": [expected[(q, k)] for q in qs]}
                plan.append(("batch", json.dumps({"questions": qs, "k": k}).encode(), {}, want))
        else:
            plan.append((*_malformed(rng, questions), None))

    def send(item):
        kind, body, headers, _ = item
        with httpx.Client(timeout=60) as client:
            return client.post(f"{url}/ask", content=body, headers={"content-type": "application/json", **headers})

    with ThreadPoolExecutor(max_workers=8) as clients:  # 8 concurrent clients
        responses = list(clients.map(send, plan))

    valid = [(item, r) for item, r in zip(plan, responses) if item[3] is not None]
    malformed = [(item, r) for item, r in zip(plan, responses) if item[3] is None]
    assert len(valid) >= 100 and len(malformed) >= 100
    for (kind, _, _, want), r in valid:
        assert r.status_code == 200, (kind, r.text)
        assert r.json() == want, kind
    for (kind, _, _, _), r in malformed:
        assert 400 <= r.status_code < 500, (kind, r.status_code, r.text)
        assert r.json()["error"], kind  # says what is wrong
    statuses = {kind: r.status_code for (kind, *_), r in malformed}
    assert statuses.get("oversized body", 413) == 413 and statuses.get("bad json", 400) == 400

    health = httpx.get(f"{url}/health", timeout=10).json()  # still up
    assert health["status"] == "ok" and health["passages"] == len(pipeline.corpus)
    answered = sum(len(json.loads(item[1]).get("questions", [None])) for item, _ in valid)
    assert health["questions_answered"] == answered
    assert health["model_calls"] < len(valid)  # concurrent requests were batched into shared model calls


def test_error_messages_name_the_field(server):
    url, _, _ = server
    r = httpx.post(f"{url}/ask", json={"question": "where?", "k": 99}, timeout=30)
    assert r.status_code == 422 and r.json() == {"error": "`k` must be an integer in [1, 5], got 99"}
    r = httpx.post(f"{url}/ask", json={"questions": ["a", ""]}, timeout=30)
    assert r.status_code == 422 and "`questions[1]` must be a non-empty string" in r.json()["error"]
    r = httpx.post(f"{url}/ask", content=b"{", headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"].startswith("body is not valid JSON")
    r = httpx.post(f"{url}/ask", content=b"x" * 5000, timeout=30)
    assert r.status_code == 413 and "at most 4096" in r.json()["error"]
    assert httpx.get(f"{url}/ask", timeout=30).status_code == 405


def test_openapi_documents_the_request_and_responses(server):
    url, _, _ = server
    spec = httpx.get(f"{url}/openapi.json", timeout=30).json()
    ask = spec["paths"]["/ask"]["post"]
    body = ask["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"question", "questions", "k"} and body["additionalProperties"] is False
    assert {"maximum": 5, "minimum": 1, "type": "integer"} in body["properties"]["k"]["anyOf"]  # the server's max_k
    assert {"200", "400", "401", "413", "422", "503", "504"} <= set(ask["responses"])
    assert {"AnswerOut", "AnswersOut", "ErrorOut", "Citation"} <= set(spec["components"]["schemas"])
    assert httpx.get(f"{url}/docs", timeout=30).status_code == 200
