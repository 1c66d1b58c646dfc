"""Benchmark what a sharded search sends between DDP ranks: payload bytes per query, by purpose, on 2 gloo processes.

    python -m rag_e2e.benchmarks.distributed [n=20000] [dim=128] [batch=16] [k=5] [rounds=20] [world=2]
                                             [out=bench_results/distributed.json]

Each rank holds a contiguous shard of an exact index over random vectors and searches its own `batch` queries per
round, with `search` (scores and rows) and with `search_with_vectors` (plus the result vectors). Bytes are counted
where they leave a process (`rag_e2e.retrieval.distributed.TRAFFIC`: payload to other ranks, summed over ranks) and
divided by the queries searched. The table also gives what one rank's merge needs at least: each query's k
candidates from each other rank (score + row, 12 bytes each) and the result vectors held elsewhere (4d bytes each).
"""

from __future__ import annotations

import socket
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rag_e2e.benchmarks.common import Table, parse_options, write_result
from rag_e2e.retrieval.distributed import TRAFFIC, ShardedIndex, shard_bounds
from rag_e2e.retrieval.index import build_index


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, opts: dict, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        n, dim, batch, k, rounds = (opts[key] for key in ("n", "dim", "batch", "k", "rounds"))
        full = torch.randn(n, dim, generator=torch.Generator().manual_seed(0))  # every rank: the same corpus
        start, end = shard_bounds(n, world, rank)
        index = ShardedIndex(build_index("exact", full[start:end]), start, n)
        gen = torch.Generator().manual_seed(1 + rank)
        result = {}
        for method in ("search", "search_with_vectors"):
            TRAFFIC.reset()
            held_elsewhere = 0
            for _ in range(rounds):
                queries = torch.randn(batch, dim, generator=gen)
                rows = getattr(index, method)(queries, k)[1]
                held_elsewhere += int(((rows < start) | (rows >= end)).sum())
            result[method] = {"sent": dict(TRAFFIC.sent), "queries": rounds * batch,
                              "vectors_held_elsewhere": held_elsewhere}  # fmt: skip
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run(opts: dict) -> dict:
    world, k, dim = opts["world"], opts["k"], opts["dim"]
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_rank_main, args=(world, _free_port(), opts, tmp), nprocs=world, join=True)
        ranks = [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=True) for r in range(world)]
    table = {}
    for method in ("search", "search_with_vectors"):
        queries = sum(r[method]["queries"] for r in ranks)
        by_purpose: dict[str, int] = {}
        for r in ranks:
            for what, n_bytes in r[method]["sent"].items():
                by_purpose[what] = by_purpose.get(what, 0) + n_bytes
        elsewhere = sum(r[method]["vectors_held_elsewhere"] for r in ranks)
        needed = (world - 1) * k * 12 + (4 * dim * elsewhere / queries if method == "search_with_vectors" else 0)
        table[method] = {"bytes_per_query": sum(by_purpose.values()) / queries,
                         "by_purpose_per_query": {w: b / queries for w, b in sorted(by_purpose.items())},
                         "merge_needs_per_query": needed, "queries": queries}  # fmt: skip
    return {"world": world, "n": opts["n"], "dim": dim, "batch_per_rank": opts["batch"], "k": k,
            "backend": "gloo", "methods": table}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    defaults = {"n": 20000, "dim": 128, "batch": 16, "k": 5, "rounds": 20, "world": 2,
                "out": "bench_results/distributed.json"}
    opts, _ = parse_options(args, defaults, prog="rag_e2e.benchmarks.distributed", doc=__doc__, positional=0,
                            extra=False)
    result = run(opts)
    print(f"{result['world']} gloo ranks, N={result['n']} d={result['dim']}, {result['batch_per_rank']} queries per "
          f"rank per round, k={result['k']}; bytes sent between ranks per query")
    table = Table("<22", ">10.0f", ">10.0f", ">12.0f", ">10.0f", ">8.1f", ">13.0f")
    print(table.header("method", "total", "queries", "candidates", "vectors", "sizes", "merge needs"))
    for method, row in result["methods"].items():
        parts = row["by_purpose_per_query"]
        print(table.row(method, row["bytes_per_query"], parts.get("queries", 0),
                        parts.get("candidates", 0) + parts.get("requests", 0), parts.get("vectors", 0),
                        parts.get("sizes", 0), row["merge_needs_per_query"]))
    write_result(opts["out"], result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
