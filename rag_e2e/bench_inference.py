"""Inference latency and throughput, plain vs optimised: `ask` one question at a time, and `serve` under concurrent
load, for each variant (int8 reader, bf16 reader, compressed/approximate index, torch.compile). Prints a table and
writes JSON.

    python -m rag_e2e.bench_inference <pipeline dir> [questions=64] [clients=8] [variants=plain,int8,hnsw,ivf_pq]
        [out=experiments/results/inference/bench.json] [threads=0]

Questions are the test split of the data in the pipeline's config.yaml (the synthetic KB needs no files). Each
variant is also compared with the plain one on the same questions: how often it gives the same answer, the overlap
of its retrieved top k, and EM against the gold answers.
"""

from __future__ import annotations

import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from rag_e2e import atomic
from rag_e2e.compose import load_run_config, split_options
from rag_e2e.data.sources import load_data
from rag_e2e.errors import ConfigError
from rag_e2e.eval.metrics import exact_match
from rag_e2e.inference.optimize import Optimizations, optimize
from rag_e2e.inference.pipeline import RagPipeline
from rag_e2e.inference.serve import ServeLimits, create_app, running

# variant -> (index kind or None for the saved one, optimisations)
VARIANTS = {
    "plain": (None, Optimizations()),
    "int8": (None, Optimizations(int8=True)),
    "bf16": (None, Optimizations(dtype="bfloat16")),
    "compile": (None, Optimizations(compile=True)),
    "hnsw": ("hnsw", Optimizations()),
    "ivf_pq": ("ivf_pq", Optimizations()),
    "int8+hnsw": ("hnsw", Optimizations(int8=True)),
}
INDEX_PARAMS = {"hnsw": {"hnsw_m": 32, "ef_search": 64}, "ivf_pq": {"nlist": 32, "nprobe": 4, "pq_m": 8}}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between order statistics."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def time_ask(pipeline: RagPipeline, questions: list[str]) -> tuple[list, dict]:
    """Each question asked alone, in turn: answers, and latency p50/p95 (ms) and questions/s."""
    pipeline.ask(questions[0])  # warm-up (first-call allocations; compilation for torch.compile)
    latencies, answers = [], []
    began = time.perf_counter()
    for q in questions:
        t0 = time.perf_counter()
        answers.append(pipeline.ask(q)[0])
        latencies.append(time.perf_counter() - t0)
    total = time.perf_counter() - began
    return answers, {"p50_ms": 1000 * percentile(latencies, 50), "p95_ms": 1000 * percentile(latencies, 95),
                     "qps": len(questions) / total}


def time_serve(pipeline: RagPipeline, questions: list[str], clients: int) -> dict:
    """`clients` concurrent HTTP clients over loopback, one question per request: per-request p50/p95 and q/s."""
    import httpx

    app = create_app(pipeline, ServeLimits(max_batch=16, max_wait_ms=5))
    with running(app) as url:
        httpx.post(f"{url}/ask", json={"question": questions[0]}, timeout=600)  # warm-up

        def one(question: str) -> float:
            with httpx.Client(timeout=600) as client:
                t0 = time.perf_counter()
                r = client.post(f"{url}/ask", json={"question": question})
                r.raise_for_status()
                return time.perf_counter() - t0

        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            latencies = list(pool.map(one, questions))
        total = time.perf_counter() - began
        calls = httpx.get(f"{url}/health", timeout=60).json()["model_calls"] - 1
    return {"p50_ms": 1000 * percentile(latencies, 50), "p95_ms": 1000 * percentile(latencies, 95),
            "qps": len(questions) / total, "mean_batch": len(questions) / max(calls, 1)}


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
        kind, opts = VARIANTS[name]
        began = time.perf_counter()
        pipeline = optimize(RagPipeline.from_pretrained(path, index_kind=kind, index_params=INDEX_PARAMS.get(kind)),
                            opts)
        load_s = time.perf_counter() - began
        answers, ask = time_ask(pipeline, questions)
        serve = time_serve(pipeline, questions, clients)
        plain = plain or answers
        row = {"variant": name, "index": pipeline.index.kind, "load_s": load_s, "ask": ask, "serve": serve,
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
    opts, rest = split_options(argv, {"questions": "64", "clients": "8", "variants": "plain,int8,hnsw,ivf_pq",
                                      "out": "experiments/results/inference/bench.json", "threads": "0"})
    if len(rest) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    if int(opts["threads"]):
        torch.set_num_threads(int(opts["threads"]))
    print(HEADER)
    result = run(Path(rest[0]), opts["variants"].split(","), int(opts["questions"]), int(opts["clients"]))
    atomic.write_json(opts["out"], result)
    print(f"wrote {opts['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
