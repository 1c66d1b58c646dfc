"""`rag-e2e serve` under overload: throughput, latency, memory and refusals at 1×, 4× and 16× its measured capacity.

    python -m rag_e2e.benchmarks.serve_load <pipeline dir> [seconds=10] [levels=1,4,16] [clients=16]
        [out=experiments/results/inference/serve_load.json] [<serve option>=<value> ...]

Steps 1 and 2 run without a `max_queue_wait_ms` budget; with one, the server is restarted with it for step 3.
`max_queue_wait_ms=auto` sets it to half the unloaded median latency of step 2: a request is admitted while the
questions ahead of it would take less than half an answer.

The server runs as `rag-e2e serve <dir> <serve options>` in its own process; the load comes from one aiohttp client
process (asyncio), one question per request.
1. capacity: `clients` closed-loop clients (each asks again as soon as it is answered) for `seconds`: answers/s.
2. unloaded: one client, one request at a time, for `seconds`: p50/p99 latency.
3. each level L: requests arrive open-loop (Poisson) at L × capacity for `seconds`, each answered or refused on
   its own; per level: the load offered and achieved, answers/s, p50/p99 latency of the answered (200), the share
   of 503 and 504, any other status, any body holding a traceback, and the server's RSS (sampled every 0.1 s).

The goal it checks (printed and in the JSON): at the highest level, p99 of answered requests ≤ 2× the unloaded p99;
RSS flat (max within 10% or 20 MB of the 1× level's); no 5xx other than the designed 503/504; no traceback.
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time
from pathlib import Path

from rag_e2e.benchmarks.common import Table, host_string, parse_options, percentile, usage_error, write_result
from rag_e2e.benchmarks.inference import serve_process

OPTIONS = {"seconds": 10.0, "levels": [1.0, 4.0, 16.0], "clients": 16,
           "out": "experiments/results/inference/serve_load.json"}
QUESTIONS = [f"what is entity {i} known for?" for i in range(64)]


class RssSampler:
    """The max and last RSS (MB) of process `pid`, sampled every `every_s` while running."""

    def __init__(self, pid: int, every_s: float = 0.1):
        import psutil

        self.process, self.every_s, self.samples = psutil.Process(pid), every_s, []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            self.samples.append(self.process.memory_info().rss / 2**20)
            await asyncio.sleep(self.every_s)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc) -> None:
        self._task.cancel()


async def _ask(session, url: str, question: str) -> tuple[int, float, str]:
    """(status, latency s, body) of one POST /ask; status 0 for a connection that failed."""
    t0 = time.perf_counter()
    try:
        async with session.post(f"{url}/ask", json={"question": question}) as r:
            body = await r.text()
            return r.status, time.perf_counter() - t0, body
    except Exception as err:  # a refused or reset connection: counted, not raised
        return 0, time.perf_counter() - t0, f"{type(err).__name__}: {err}"


async def closed_loop(session, url: str, clients: int, seconds: float) -> list[tuple[int, float, str]]:
    """`clients` clients, each asking again as soon as answered, until `seconds` pass."""
    end, rng = time.perf_counter() + seconds, random.Random(0)

    async def client() -> list:
        out = []
        while time.perf_counter() < end:
            out.append(await _ask(session, url, rng.choice(QUESTIONS)))
        return out

    return [r for part in await asyncio.gather(*(client() for _ in range(clients))) for r in part]


async def open_loop(session, url: str, rate: float, seconds: float) -> tuple[list[tuple[int, float, str]], float]:
    """Requests at Poisson arrivals of `rate`/s for `seconds`, none waiting for another; (results, achieved rate)."""
    rng, tasks = random.Random(1), []
    start = time.perf_counter()
    due = start
    while due < start + seconds:
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(_ask(session, url, rng.choice(QUESTIONS))))
        due += rng.expovariate(rate)
    sent_s = time.perf_counter() - start
    return list(await asyncio.gather(*tasks)), len(tasks) / sent_s


def summarize(results: list[tuple[int, float, str]], seconds: float) -> dict:
    answered = [t for status, t, _ in results if status == 200]
    codes: dict[str, int] = {}
    for status, _, _ in results:
        codes[str(status)] = codes.get(str(status), 0) + 1
    n = max(len(results), 1)
    return {"requests": len(results), "answers_per_s": len(answered) / seconds,
            "p50_ms": 1000 * percentile(answered, 50) if answered else None,
            "p99_ms": 1000 * percentile(answered, 99) if answered else None,
            "max_ms": 1000 * max(answered) if answered else None,
            "share_503": codes.get("503", 0) / n, "share_504": codes.get("504", 0) / n,
            "other_status": {c: v for c, v in codes.items() if c not in ("200", "503", "504")},
            "tracebacks": sum("Traceback" in body for _, _, body in results)}


def _session():
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),  # no client-side queue: the server's
                                 timeout=aiohttp.ClientTimeout(total=600))


async def baseline(url: str, clients: int, seconds: float) -> dict:
    """Capacity (answers/s of `clients` closed-loop clients) and the unloaded latency (one client)."""
    async with _session() as session:
        await closed_loop(session, url, 2, 1.0)  # warm-up
        capacity = summarize(await closed_loop(session, url, clients, seconds), seconds)["answers_per_s"]
        unloaded = summarize(await closed_loop(session, url, 1, seconds), seconds)
    return {"capacity_answers_per_s": capacity, "unloaded": unloaded}


async def _model_time(session, url: str) -> tuple[float, int]:
    """(seconds inside model calls, questions answered) so far, from the server's /health."""
    async with session.get(f"{url}/health") as r:
        health = await r.json()
    return health["model_seconds"], health["questions_answered"]


async def overload(url: str, pid: int, capacity: float, levels: list[float], seconds: float) -> list[dict]:
    """One row per level: open-loop arrivals at level × capacity. `model_ms_per_answer` (the server's own time per
    answer during the level) tells a slower model (CPU taken by the load) from queueing."""
    async with _session() as session:
        await closed_loop(session, url, 2, 1.0)  # warm-up (a fresh server measures its answer rate)
        rows = []
        for level in levels:
            model_s, answered = await _model_time(session, url)
            with RssSampler(pid) as rss:
                results, achieved = await open_loop(session, url, level * capacity, seconds)
            model_s2, answered2 = await _model_time(session, url)
            per_answer = 1000 * (model_s2 - model_s) / (answered2 - answered) if answered2 > answered else None
            row = {"level": level, "offered_per_s": level * capacity, "achieved_per_s": achieved,
                   **summarize(results, seconds), "model_ms_per_answer": per_answer,
                   "rss_max_mb": max(rss.samples), "rss_last_mb": rss.samples[-1]}
            rows.append(row)
            print(_line(row), flush=True)
            await asyncio.sleep(1.0)  # let the queue drain before the next level
    return rows


def goal(result: dict) -> dict:
    top, base = result["levels"][-1], result["levels"][0]
    bad_5xx = sum(v for row in result["levels"] for c, v in row["other_status"].items() if c.startswith("5"))
    checks = {
        "p99_at_top_within_2x_unloaded": top["p99_ms"] is not None
        and top["p99_ms"] <= 2 * result["unloaded"]["p99_ms"],
        "rss_flat": top["rss_max_mb"] <= max(1.1 * base["rss_max_mb"], base["rss_max_mb"] + 20),
        "no_other_5xx": bad_5xx == 0,
        "no_traceback": all(row["tracebacks"] == 0 for row in result["levels"]),
    }
    return {**checks, "met": all(checks.values())}


TABLE = Table(">5", ">10.1f", ">8.1f", ">9.1f", ">8.1f", ">8.1f", ">8.1f", ">8.1f", ">6.1%", ">6.1%", ">6d", ">7.0f",
              sep=" ")
HEADER = TABLE.header("load", "offered/s", "sent/s", "answers/s", "p50 ms", "p99 ms", "max ms", "model ms", "503",
                      "504", "other", "RSS MB")


def _line(r: dict) -> str:
    ms = [r[key] if r[key] is not None else "-" for key in ("p50_ms", "p99_ms", "max_ms", "model_ms_per_answer")]
    return TABLE.row(f"{r['level']:g}×", r["offered_per_s"], r["achieved_per_s"], r["answers_per_s"], *ms,
                     r["share_503"], r["share_504"], sum(r["other_status"].values()), r["rss_max_mb"])


def _levels(url: str, pid: int, result: dict, levels: list[float], seconds: float, options: dict) -> list[dict]:
    print(f"serve {' '.join(f'{k}={v}' for k, v in options.items()) or '(defaults)'}\n{HEADER}", flush=True)
    return asyncio.run(overload(url, pid, result["capacity_answers_per_s"], levels, seconds))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = "rag_e2e.benchmarks.serve_load"
    opts, rest = parse_options(argv, OPTIONS, prog=prog, doc=__doc__, positional=1)  # the rest: the dir, serve options
    (path,) = (Path(a) for a in rest if "=" not in a)
    serve_options = dict(a.split("=", 1) for a in rest if "=" in a)
    if not path.is_dir():
        usage_error(prog, f"{path}: not a directory (an exported pipeline: rag-e2e export)")
    levels, seconds, clients = opts["levels"], opts["seconds"], opts["clients"]
    budget = serve_options.get("max_queue_wait_ms")
    plain = {k: v for k, v in serve_options.items() if k != "max_queue_wait_ms"}
    with serve_process(path, plain) as (url, pid):  # capacity and latency without a waiting budget
        result = asyncio.run(baseline(url, clients, seconds))
        unloaded = result["unloaded"]
        print(f"capacity {result['capacity_answers_per_s']:.1f} answers/s ({clients} closed-loop clients); unloaded "
              f"p50 {unloaded['p50_ms']:.1f} ms, p99 {unloaded['p99_ms']:.1f} ms", flush=True)
        if budget is None:
            result["levels"] = _levels(url, pid, result, levels, seconds, serve_options)
    if budget is not None:  # the server again, with its waiting budget
        if budget == "auto":  # half an unloaded answer, as measured above
            serve_options = {**serve_options, "max_queue_wait_ms": f"{unloaded['p50_ms'] / 2:.1f}"}
        with serve_process(path, serve_options) as (url, pid):
            result["levels"] = _levels(url, pid, result, levels, seconds, serve_options)
    result |= {"host": host_string(), "pipeline": str(path), "serve_options": serve_options, "seconds": seconds,
               "clients": clients}
    result["goal"] = goal(result)
    print("goal: " + ", ".join(f"{k}={v}" for k, v in result["goal"].items()))
    write_result(opts["out"], result)
    return 0 if math.isfinite(result["capacity_answers_per_s"]) else 1


if __name__ == "__main__":
    sys.exit(main())
