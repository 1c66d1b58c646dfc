"""Benchmark exact inner-product top-k: fused Triton kernel vs torch.topk(Q @ D.T) vs FAISS flat.

    python -m rag_e2e.kernels.bench [--quick] [--out bench_results/topk.json] [--dtype float16 ...]

On CUDA: d=768, N in {1M, 4M, 16M}, B in {1, 16, 64, 256, 1024}, k in {10, 100}; GB/s counts one read of D and is
also given as a fraction of the measured device-to-device copy bandwidth (read + write bytes per second).
Without CUDA: N in {100k, 1M} (--quick: 100k), B in {1, 16, 256}, k in {10, 100}, float32 and bfloat16 storage:
`topk_scores` as dispatched (auto: the backend the tuner measured fastest here, named in the `chosen` column), each
other exact CPU backend forced (what a choice carried over from another machine would cost), `torch.topk(Q @ D.T)`
as a user writes it, and faiss-cpu IndexFlatIP over the float32 vectors. `vs best` is our time over the faster of
the last two. Methods are timed alternately, in rotating order, within each repeat, so a change in background load
hits all of them; each time is a median.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import statistics
from collections.abc import Callable
from pathlib import Path

import torch

from rag_e2e.benchmarks.common import (
    Table,
    cpu_label,
    device_label,
    host_string,
    medians,
    time_alternately,
    timed,
    write_result,
)

from . import _autotune
from . import topk as topk_mod
from .topk import topk_scores

try:
    import faiss
except ImportError:  # FAISS rows are skipped
    faiss = None

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _time_ms(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of fn in ms (CUDA events on GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            times.append(timed(fn)[1] * 1e3)
    return statistics.median(times)


def _copy_bandwidth_gbs(device: torch.device, n_bytes: int = 2**30) -> float:
    """Device-to-device copy bandwidth in GB/s, counting the bytes read plus the bytes written."""
    src = torch.empty(n_bytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = _time_ms(lambda: dst.copy_(src), device, warmup=3, repeats=10)
    return 2 * n_bytes / ms / 1e6


def _torch_topk(queries: torch.Tensor, docs: torch.Tensor, k: int, budget_bytes: int = 2**31):
    """torch.topk(Q @ D.T) as a user would write it; chunked over N when the (B, N) scores exceed budget_bytes."""
    n_docs = docs.shape[0]
    chunk = max(k, min(n_docs, budget_bytes // (queries.shape[0] * queries.element_size())))
    best_s = best_i = None
    for start in range(0, n_docs, chunk):
        s, i = (queries @ docs[start : start + chunk].T).topk(k, dim=1)  # (B, k)
        i = i + start
        if best_s is not None:
            s, pos = torch.cat([best_s, s], dim=1).topk(k, dim=1)
            i = torch.cat([best_i, i], dim=1).gather(1, pos)
        best_s, best_i = s, i
    return best_s, best_i


def _faiss_search(device: torch.device, docs: torch.Tensor) -> Callable[[torch.Tensor, int], object] | None:
    """A search(queries, k) callable over docs, or None when FAISS cannot run here."""
    if faiss is None:
        return None
    if device.type == "cuda":
        if faiss.get_num_gpus() == 0:
            return None
        importlib.import_module("faiss.contrib.torch_utils")  # lets knn_gpu read torch CUDA tensors in place

        res = faiss.StandardGpuResources()
        return lambda q, k: faiss.knn_gpu(res, q, docs, k, metric=faiss.METRIC_INNER_PRODUCT)
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(docs.float().numpy())
    return lambda q, k: index.search(q.float().numpy(), k)


def _methods(device: torch.device, docs: torch.Tensor) -> dict[str, Callable[[torch.Tensor, int], object]]:
    """name -> search(queries, k) over docs."""
    methods: dict[str, Callable[[torch.Tensor, int], object]] = {}
    if device.type == "cuda":
        methods["triton"] = lambda q, k: topk_scores(q, docs, k, backend="triton")
        methods["torch_topk"] = lambda q, k: _torch_topk(q, docs, k)
    else:
        methods["topk_scores"] = lambda q, k: topk_scores(q, docs, k)
        methods["torch_topk"] = lambda q, k: _torch_topk(q, docs, k)
        for name in _autotune.available(docs[:1], docs[:1]):
            methods[f"forced_{name}"] = lambda q, k, name=name: topk_scores(q, docs, k, backend=name)
    faiss_search = _faiss_search(device, docs)
    if faiss_search is not None:
        methods["faiss_flat_gpu" if device.type == "cuda" else "faiss_flat_cpu"] = faiss_search
    return methods


def _grid(device: torch.device, quick: bool) -> tuple[list[int], list[int], list[int]]:
    """(N values, B values, k values)."""
    if device.type == "cuda":
        return ([2**20, 2**22] if quick else [2**20, 2**22, 2**24]), [1, 16, 64, 256, 1024], [10, 100]
    return ([100_000] if quick else [100_000, 1_000_000]), [1, 16, 256], [10, 100]


def _time_alternately(methods: dict[str, Callable[[], object]], device: torch.device, warmup: int,
                      repeats: int) -> dict[str, float]:
    """name -> median ms, each repeat running every method once, the order rotated between repeats.

    On CPU each timed call follows an untimed call of the same method, so it is timed in its own steady state (a
    search in a loop), not in what the previous method left behind: rotating the order puts each method after the
    same neighbour in every round but one (`topk_scores` after FAISS's fp32 scan), and a bf16 search right after that
    scan took 11.7 ms against 6.6 ms after itself (100k x 768, B = 16, on an Intel Xeon).
    """
    # one call (CUDA events on a GPU)
    timer = functools.partial(_time_ms, device=device, warmup=1 if device.type == "cpu" else 0, repeats=1)
    return medians(time_alternately(methods, repeats, warmup=warmup, order="rotate", timer=timer))


def _usable(search: Callable[[torch.Tensor, int], object], queries: torch.Tensor, k: int, name: str,
            where: str) -> bool:
    try:
        search(queries, k)
        return True
    except (RuntimeError, AssertionError, TypeError, ValueError) as err:  # FAISS without fp16, OOM
        print(f"skip {name} {where}: {str(err).splitlines()[0]}")
        return False


def run(args: argparse.Namespace) -> dict:
    """Runs the grid and returns the JSON-ready results."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = args.dtype or (["float16"] if device.type == "cuda" else ["float32", "bfloat16"])
    copy_gbs = _copy_bandwidth_gbs(device) if device.type == "cuda" else None
    n_values, b_values, k_values = _grid(device, args.quick)
    n_values, b_values, k_values = args.n or n_values, args.b or b_values, args.k or k_values
    rows = []
    for n_docs in n_values:
        for dtype_name in dtypes:
            docs = torch.randn(n_docs, args.dim, device=device).to(_DTYPES[dtype_name])
            doc_bytes = docs.numel() * docs.element_size()
            methods = _methods(device, docs)
            for n_queries in b_values:
                queries = torch.randn(n_queries, args.dim, device=device).to(docs.dtype)
                for k in k_values:
                    where = f"N={n_docs} {dtype_name} B={n_queries} k={k}"
                    # On CPU the tuner's choice for this cell (its probe runs here, not inside a timed call); forcing
                    # that backend again would time the same path twice.
                    chosen = _autotune.choose(queries, docs, k, topk_mod._search) if device.type == "cpu" else None
                    runnable = {name: (lambda s=search: s(queries, k)) for name, search in methods.items()  # noqa: B023
                                if name != f"forced_{chosen}" and _usable(search, queries, k, name, where)}
                    timed = _time_alternately(runnable, device, args.warmup, args.repeats)
                    faiss_ms = next((ms for name, ms in timed.items() if name.startswith("faiss")), None)
                    bar = [ms for name, ms in timed.items() if name.startswith("faiss") or name == "torch_topk"]
                    for name, ms in timed.items():
                        gbs = doc_bytes / ms / 1e6
                        # 4 significant digits, not 3 decimals: a µs-scale time keeps its precision (and its ratio)
                        rows.append(dict(N=n_docs, dtype=dtype_name, B=n_queries, k=k, method=name,
                                         ms=float(f"{ms:.4g}"), chosen=chosen,
                                         vs_best=round(ms / min(bar), 3) if bar else None,
                                         gbs=round(gbs, 1), frac_copy=round(gbs / copy_gbs, 3) if copy_gbs else None,
                                         vs_faiss=round(ms / faiss_ms, 3) if faiss_ms else None))  # fmt: skip
            del docs, methods  # free D before allocating the next one
    return dict(device=device_label(cpu_label()), dtypes=dtypes, host=host_string(),
                dim=args.dim, threads=torch.get_num_threads(), copy_gbs=copy_gbs, repeats=args.repeats,
                rows=rows)  # fmt: skip


def _print_table(result: dict) -> None:
    print(f"device={result['device']} d={result['dim']} threads={result['threads']}"
          + (f" copy={result['copy_gbs']:.0f} GB/s (read+write)" if result["copy_gbs"] else ""))  # fmt: skip
    table = Table(">10", "<9", ">5", ">4", "<18", "<11", ">10.2f", ">8.1f", ">8.2f", ">8.2f", ">6", sep=" ")
    names = ["N", "dtype", "B", "k", "method", "chosen", "ms", "GB/s", "vs faiss", "vs best"]
    print(table.header(*names, *(["copy%"] if result["copy_gbs"] else [])))
    for r in result["rows"]:
        copy = f"{100 * r['frac_copy']:.0f}%" if r["frac_copy"] is not None else None
        print(table.row(r["N"], r["dtype"], r["B"], r["k"], r["method"], r.get("chosen") or "", r["ms"], r["gbs"],
                        r["vs_faiss"], r.get("vs_best"), copy))


def summary_markdown(results: list[dict]) -> str:
    """One row per (N, dtype, B, k): the tuner's choice, `topk_scores` (auto), FAISS flat and `torch.topk(Q @ D.T)`
    ms, auto over the faster of the two, and the slowest other forced backend (a choice carried over from another
    machine) over auto; a cell measured in a later file replaces the earlier file's."""
    cells: dict[tuple, dict[str, float]] = {}
    chosen: dict[tuple, str] = {}
    for result in results:
        fresh: dict[tuple, dict[str, float]] = {}
        for r in result["rows"]:
            cell = (r["N"], r["dtype"], r["B"], r["k"])
            fresh.setdefault(cell, {})[r["method"]] = r["ms"]
            chosen[cell] = r.get("chosen") or ""
        cells.update(fresh)
    lines = ["| N | storage | B | k | chosen | auto ms | faiss ms | torch.topk ms | auto / best | other / auto |"]
    lines.append("|--:|---|--:|--:|---|--:|--:|--:|--:|--:|")
    for cell, ms in sorted(cells.items(), key=lambda item: (item[0][1] != "float32", *item[0])):
        ours, faiss_ms, torch_ms = ms.get("topk_scores"), ms.get("faiss_flat_cpu"), ms.get("torch_topk")
        bar = [x for x in (faiss_ms, torch_ms) if x is not None]
        if ours is None or not bar:
            continue
        others = [x for name, x in ms.items() if name.startswith("forced_")]
        other = f"{max(others) / ours:.2f}" if others else ""
        fmt = lambda x: f"{x:.1f}" if x is not None else ""  # noqa: E731
        n, dtype, b, k = cell
        lines.append(f"| {n:,} | {dtype} | {b} | {k} | {chosen[cell]} | {ours:.1f} | {fmt(faiss_ms)} | "
                     f"{fmt(torch_ms)} | {ours / min(bar):.2f} | {other} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_results/topk.json"), help="JSON results path")
    parser.add_argument("--quick", action="store_true", help="smaller N for a smoke run")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), nargs="+",
                        help="storage dtypes; default: float16 on CUDA, float32 and bfloat16 on CPU")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--n", type=int, nargs="+", help="passage counts (default: the device's grid above)")
    parser.add_argument("--b", type=int, nargs="+", help="query batch sizes (default: the device's grid)")
    parser.add_argument("--k", type=int, nargs="+", help="k values (default: 10 100)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--summary", type=Path, nargs="+", help="print the README table of these JSON results; no run")
    args = parser.parse_args(argv)
    if args.summary:
        print(summary_markdown([json.loads(p.read_text()) for p in args.summary]))
        return
    result = run(args)
    _print_table(result)
    write_result(args.out, result, indent=1)


if __name__ == "__main__":
    main()
