"""Inference latency and throughput, plain vs optimised: `ask` one question at a time, and `serve` under concurrent
load, for each variant (int8 reader, bf16 reader, compressed/approximate index, torch.compile), each variant being
the `rag-e2e ask/serve` options of that name (VARIANTS). Prints a table and writes JSON. `serve` is measured as
`rag-e2e serve` in its own process, with `clients` kept-alive loopback connections each asking one question per request.

    python -m rag_e2e.benchmarks.inference <pipeline dir> [questions=64] [clients=8] [variants=plain,int8,hnsw,ivf_pq]
        [out=experiments/results/inference/bench.json] [threads=0]

Questions are the test split of the data in the pipeline's config.yaml (the synthetic KB needs no files). Each
variant is also compared with the plain one on the same questions: how often it gives the same answer, the overlap
of its retrieved top k, and EM against the gold answers.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from rag_e2e.benchmarks.common import parse_options, percentile, timed, write_result
from rag_e2e.cli import load_pipeline
from rag_e2e.compose import load_run_config
from rag_e2e.data.sources import load_data
from rag_e2e.errors import ConfigError
from rag_e2e.eval.metrics import exact_match
from rag_e2e.inference.pipeline import RagPipeline

# variant -> the `rag-e2e ask/serve` options it is (the index settings are build_index's defaults: an IVF of
# N // 39 lists, 16 probed; HNSW with M=32, ef_search=128)
VARIANTS = {
    "plain": {},
    "int8": {"int8": "true"},
    "bf16": {"dtype": "bfloat16"},
    "compile": {"compile": "true"},
    "hnsw": {"index": "hnsw"},
    "ivf_pq": {"index": "ivf_pq"},
    "int8+hnsw": {"int8": "true", "index": "hnsw"},
}


def time_ask(pipeline: RagPipeline, questions: list[str]) -> tuple[list, dict]:
    """Each question asked alone, in turn: answers, and latency p50/p95 (ms) and questions/s."""
    pipeline.ask(questions[0])  # warm-up (first-call allocations; compilation for torch.compile)
    answers, latencies = [], []

    def ask_each() -> None:
        for q in questions:
            result, seconds = timed(pipeline.ask, q)
            answers.append(result[0])
            latencies.append(seconds)

    total = timed(ask_each)[1]
    return answers, {"p50_ms": 1000 * percentile(latencies, 50), "p95_ms": 1000 * percentile(latencies, 95),
                     "qps": len(questions) / total}


def time_serve(path: Path, options: dict[str, str], questions: list[str], clients: int) -> dict:
    """`rag-e2e serve` in its own process, and `clients` concurrent clients over loopback, each with one kept-alive
    connection sending one question per request until all are asked: per-request p50/p95, q/s and mean batch.

    The server runs apart so that the clients' Python does not compete with it for one interpreter lock.
    """
    import httpx

    with serve_process(path, options) as (url, _):
        httpx.post(f"{url}/ask", json={"question": questions[0]}, timeout=600).raise_for_status()  # warm-up
        todo = iter(questions)
        lock = threading.Lock()

        def client() -> list[float]:
            latencies = []
            with httpx.Client(base_url=url, timeout=600) as session:
                while True:
                    with lock:
                        question = next(todo, None)
                    if question is None:
                        return latencies
                    response, seconds = timed(session.post, "/ask", json={"question": question})
                    response.raise_for_status()
                    latencies.append(seconds)

        def all_clients() -> list[float]:
            with ThreadPoolExecutor(max_workers=clients) as pool:
                return [t for part in pool.map(lambda _: client(), range(clients)) for t in part]

        latencies, total = timed(all_clients)
        calls = httpx.get(f"{url}/health", timeout=60).json()["model_calls"] - 1
    return {"p50_ms": 1000 * percentile(latencies, 50), "p95_ms": 1000 * percentile(latencies, 95),
            "qps": len(questions) / total, "mean_batch": len(questions) / max(calls, 1)}


@contextlib.contextmanager
def serve_process(path: Path, options: dict[str, str], timeout_s: float = 300.0) -> Iterator[tuple[str, int]]:
    """`rag-e2e serve <path> <options>` on a free loopback port; yields (its URL, its pid) once /health answers."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [sys.executable, "-m", "rag_e2e.cli", "serve", str(path), f"port={port}", "max_batch=16", "max_wait_ms=5",
            *(f"{k}={v}" for k, v in options.items())]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same threads as `ask` had
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"rag-e2e serve exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                httpx.get(f"{url}/health", timeout=5).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"rag-e2e serve did not answer within {timeout_s:.0f} s") from None
                time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run(path: Path, variants: list[str], n_questions: int, clients: int) -> dict:
    cfg_file = path / "config.yaml"
    if not cfg_file.is_file():
        raise ConfigError(f"{cfg_file}: not found; the benchmark takes its questions from the exported run's data")
    data = load_data(load_run_config(cfg_file).data)
    examples = data.test[:n_questions]
    questions = [ex.question for ex in examples]
    rows, plain = [], None
    for name in variants:
        if name not in VARIANTS:
            raise ConfigError(f"unknown variant {name!r} (variants: {', '.join(VARIANTS)})")
        pipeline, load_s = timed(load_pipeline, str(path), VARIANTS[name])
        answers, ask = time_ask(pipeline, questions)
        index_kind = pipeline.index.kind
        del pipeline  # the server process loads its own
        serve = time_serve(path, VARIANTS[name], questions, clients)
        plain = plain or answers
        row = {"variant": name, "index": index_kind, "load_s": load_s, "ask": ask, "serve": serve,
               "em": sum(exact_match(a.answer, ex.answers) for a, ex in zip(answers, examples)) / len(examples),
               "same_answer": sum(a.answer == b.answer for a, b in zip(answers, plain)) / len(answers),
               "overlap@k": statistics.mean(len({c.pid for c in a.passages} & {c.pid for c in b.passages})
                                            / len(b.passages) for a, b in zip(answers, plain))}
        rows.append(row)
        print(_line(row), flush=True)
    return {"pipeline": str(path), "questions": len(questions), "clients": clients,
            "threads": torch.get_num_threads(), "device": "cpu", "rows": rows}


HEADER = ("| variant | index | ask p50 ms | ask p95 ms | ask q/s | serve p50 ms | serve p95 ms | serve q/s | "
          "mean batch | EM | same answer | overlap@k |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")


def _line(r: dict) -> str:
    a, s = r["ask"], r["serve"]
    return (f"| {r['variant']} | {r['index']} | {a['p50_ms']:.1f} | {a['p95_ms']:.1f} | {a['qps']:.1f} | "
            f"{s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {s['qps']:.1f} | {s['mean_batch']:.1f} | {100 * r['em']:.1f} | "
            f"{100 * r['same_answer']:.1f} | {100 * r['overlap@k']:.1f} |")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    defaults = {"questions": 64, "clients": 8, "variants": ["plain", "int8", "hnsw", "ivf_pq"],
                "out": "experiments/results/inference/bench.json", "threads": 0}
    opts, (path,) = parse_options(argv, defaults, prog="rag_e2e.benchmarks.inference", doc=__doc__, positional=1,
                                  extra=False)
    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    print(HEADER)
    result = run(Path(path), opts["variants"], opts["questions"], opts["clients"])
    write_result(opts["out"], result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
