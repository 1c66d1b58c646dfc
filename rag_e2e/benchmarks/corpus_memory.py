"""Corpus memory per rank: today's list of Passages against the memory-mapped Arrow corpus (data.mmap_corpus).

    python -m rag_e2e.benchmarks.corpus_memory [sizes=1000000,10000000] [ranks=1,2] [lookups=100000]
        [list_max=1000000] [words=100] [work=/tmp/rag_e2e_corpus_bench]
        [out=experiments/results/corpus/corpus_memory.json]

For each corpus size a synthetic Parquet corpus (`words` words a passage, DPR's passages are 100) is written once
under `work`, and converted once to the mapped form (timed). Then each mode is opened by 1 and 2 gloo ranks, each
rank in its own process, as training opens it (the corpus plus its pid -> row lookup), and reads `lookups` random
passages and a tenth as many pids. Per rank, from /proc/self/smaps_rollup before and after: PSS (file pages shared by
the ranks count once in total, split between them), private anonymous memory, and peak RSS (VmHWM). The list mode
is skipped above `list_max` passages, where it would not fit this machine's memory beside a second rank.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch.distributed as dist
import torch.multiprocessing as mp

from rag_e2e.benchmarks.common import Table, cpu_label, parse_options, write_result

DEFAULTS = {"sizes": [1_000_000, 10_000_000], "ranks": [1, 2], "lookups": 100_000, "list_max": 1_000_000,
            "words": 100, "work": "/tmp/rag_e2e_corpus_bench", "out": "experiments/results/corpus/corpus_memory.json"}
VOCABULARY = [f"w{i:05d}" for i in range(20_000)]
CHUNK = 100_000


def synthetic_parquet(path: Path, n: int, words: int, seed: int = 0) -> Path:
    """`n` passages of `words` random words, ids "p<row>", as a Parquet corpus (written once, reused)."""
    if path.is_file() and pq.ParquetFile(path).metadata.num_rows == n:
        return path
    rng = np.random.default_rng(seed)
    vocab = np.array(VOCABULARY)
    tmp = path.with_suffix(".partial")
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("title", pa.string())])
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, n, CHUNK):
            rows = min(CHUNK, n - start)
            picks = vocab[rng.integers(0, len(vocab), size=(rows, words))]
            texts = [" ".join(row) for row in picks]
            ids = [f"p{i}" for i in range(start, start + rows)]
            writer.write_table(pa.table({"id": ids, "text": texts, "title": [f"Title {i // 10}" for i in
                                                                            range(start, start + rows)]}, schema))
    os.replace(tmp, path)
    return path


def memory() -> dict[str, float]:
    """This process's PSS, private anonymous memory and peak RSS, in MB."""
    fields = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                fields[parts[0][:-1]] = int(parts[1]) / 1024
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    return {"pss": fields["Pss"], "anon": fields["Anonymous"], "rss": fields["Rss"], "peak_rss": peak}


def _rank(rank: int, world: int, mode: str, source: str, lookups: int, init: str, results: str) -> None:
    from rag_e2e.data.corpus import load_corpus
    from rag_e2e.data.mapped import open_mapped, row_lookup

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    dist.barrier()
    before = memory()
    t0 = time.perf_counter()
    corpus = open_mapped(source) if mode == "mapped" else load_corpus(source)
    row_of = row_lookup(corpus)  # what the model builds (rag_e2e/models/rag.py)
    load_s = time.perf_counter() - t0
    rng = random.Random(rank)
    rows = [rng.randrange(len(corpus)) for _ in range(lookups)]
    t0 = time.perf_counter()
    chars = sum(len(corpus[r].text) for r in rows)
    read_s = time.perf_counter() - t0
    pids = [f"p{r}" for r in rows[: max(1, lookups // 10)]]
    t0 = time.perf_counter()
    found = sum(row_of(pid) is not None for pid in pids)
    pid_s = time.perf_counter() - t0
    assert found == len(pids) and chars > 0
    dist.barrier()  # every rank has read: the shared pages are resident and split between them
    after = memory()
    Path(results, f"{rank}.json").write_text(json.dumps({
        "load_s": load_s, "rows_per_s": lookups / read_s, "pids_per_s": len(pids) / pid_s,
        **{f"{k}_mb": after[k] - before[k] for k in ("pss", "anon", "rss")}, "peak_rss_mb": after["peak_rss"]}))
    dist.destroy_process_group()


def measure(mode: str, source: Path, world: int, lookups: int, work: Path) -> list[dict]:
    """One run of `world` gloo ranks opening `source` as `mode`; each rank's numbers."""
    results = work / f"ranks-{mode}-{world}"
    results.mkdir(parents=True, exist_ok=True)
    for old in results.iterdir():
        old.unlink()
    init = f"file://{work / f'init-{mode}-{world}-{time.time_ns()}'}"
    mp.start_processes(_rank, args=(world, mode, str(source), lookups, init, str(results)), nprocs=world,
                       join=True, start_method="spawn")
    return [json.loads(results.joinpath(f"{r}.json").read_text()) for r in range(world)]


def main(argv: list[str]) -> int:
    opts, _ = parse_options(argv, DEFAULTS, prog="corpus_memory", doc=__doc__, positional=0, extra=False)
    work = Path(opts["work"])
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAG_E2E_CACHE", str(work / "cache"))
    from rag_e2e.data.mapped import open_mapped

    table = Table("<12", ">5", "<7", ">7", ">10", ">9", ">12", ">13", ">12", ">12", sep="  ")
    print(table.header("passages", "ranks", "mode", "load s", "rows/s", "pids/s", "PSS MB/rank", "anon MB/rank",
                       "RSS MB/rank", "peak RSS MB"))
    runs = []
    for n in opts["sizes"]:
        source = synthetic_parquet(work / f"passages-{n}.parquet", n, opts["words"])
        t0 = time.perf_counter()
        open_mapped(source)  # the one-time conversion, outside the per-rank timings
        convert_s = time.perf_counter() - t0
        for mode in ("list", "mapped"):
            for world in opts["ranks"]:
                if mode == "list" and n > opts["list_max"]:
                    runs.append({"passages": n, "mode": mode, "ranks": world, "skipped": "above list_max"})
                    continue
                per_rank = measure(mode, source, world, opts["lookups"], work)
                mean = {k: sum(r[k] for r in per_rank) / world for k in per_rank[0]}
                runs.append({"passages": n, "mode": mode, "ranks": world, "convert_s": convert_s, **mean,
                             "per_rank": per_rank})
                print(table.row(f"{n:,}", world, mode, f"{mean['load_s']:.1f}", f"{mean['rows_per_s']:,.0f}",
                                f"{mean['pids_per_s']:,.0f}", f"{mean['pss_mb']:.0f}", f"{mean['anon_mb']:.0f}",
                                f"{mean['rss_mb']:.0f}", f"{mean['peak_rss_mb']:.0f}"))
        print(f"  conversion of {n:,} passages to the mapped form: {convert_s:.1f} s (once; cached)")
    ratios = {}
    for run in runs:
        base = next((r for r in runs if r["mode"] == "list" and r["passages"] == run["passages"]
                     and r["ranks"] == run["ranks"] and "skipped" not in r), None)
        if run["mode"] == "mapped" and base:
            key = f"{run['passages']} passages, {run['ranks']} ranks"
            ratios[key] = {m: run[f"{m}_mb"] / base[f"{m}_mb"] for m in ("anon", "pss", "rss")}
            print(f"  mapped / list per rank at {key}: private {ratios[key]['anon']:.3f}, PSS "
                  f"{ratios[key]['pss']:.3f}, RSS {ratios[key]['rss']:.3f}  (goal <= 0.10)")
    write_result(opts["out"], {"machine": cpu_label(), "options": {k: v for k, v in opts.items() if k != "out"},
                               "runs": runs, "ratio_mapped_over_list": ratios})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
