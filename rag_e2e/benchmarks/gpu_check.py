"""One prepared GPU check: the Triton top-k's correctness, its speed against the memory floor, and a short end-to-end
training with index refresh on the GPU, in one command and one JSON file.

    python -m rag_e2e.benchmarks.gpu_check [--out gpu_check.json]      # ~3-5 min on one H100/H200

1. Correctness: `topk_scores(backend="triton")` in float32 and bfloat16 against float64 scores of the same inputs
   (B in {1, 7, 64}, k in {1, 10, 100}, N = 20,011, d = 768): every returned score is the float64 score of its row
   within `tol`, and the returned rows are a top-k within `tol` (the k-th scores agree); rows also agree with the
   float32 torch reference where no near-tie separates them (`rows_match`).
2. Speed: `python -m rag_e2e.kernels.bench` on N in {1M, 4M} x 768 bfloat16, B in {1, 16, 256}, k in {10, 100}:
   Triton, `torch.topk(Q @ D.T)` and faiss-gpu (when installed); GB/s over one read of the passages, and as a
   fraction of the measured device-to-device copy bandwidth (read + write). Goal: >= 0.85 for B <= 256.
3. Training: 50 steps of the tiny synthetic end-to-end system (both towers train, sync refresh every 10 steps) on
   the GPU, then its test metrics and refresh summary.

Without CUDA it runs the same steps at the sizes given (the Triton interpreter needs TRITON_INTERPRET=1 set first),
which is how its arguments and JSON are tested on CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from rag_e2e.benchmarks.common import device_label, host_string, timed, write_result
from rag_e2e.kernels import bench, topk_scores, topk_scores_reference
from rag_e2e.kernels import topk as topk_mod

_DTYPES = {name: bench._DTYPES[name] for name in ("float32", "bfloat16")}  # the correctness check's dtypes
BANDWIDTH_GOAL = 0.85  # fraction of copy bandwidth for B <= 256

# The tiny synthetic system of the test suite, trained end to end (tests/helpers.py TINY, at GPU batch sizes).
TRAIN_OVERRIDES = [
    "data.synthetic.num_entities=200", "data.synthetic.num_reader_entities=50", "data.batch_size=16",
    "data.eval_batch_size=64", "encoder.hidden_size=64", "encoder.intermediate_size=128", "generator.d_model=64",
    "generator.ffn_dim=128", "generator.num_layers=1", "retriever=end2end", "retriever.k=3", "eval.ks=[1,5]",
    "eval.max_new_tokens=6", "eval.before_training=false", "refresh=sync", "logger.wandb=false",
]


def check_correctness(device: torch.device, dtypes: list[str], n_docs: int, dim: int, b_values: list[int],
                      k_values: list[int], seed: int = 0) -> list[dict]:
    """One row per (dtype, B, k): the largest score error against float64, the k-th score gap, rows agreement."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rows = []
    for dtype_name in dtypes:
        docs = torch.randn(n_docs, dim, generator=gen).to(device=device, dtype=_DTYPES[dtype_name])
        for b in b_values:
            queries = torch.randn(b, dim, generator=gen).to(device=device, dtype=docs.dtype)
            exact = queries.double() @ docs.double().T  # (B, N): the inputs as stored, multiplied in float64
            # fp32 accumulation over d products: error ~ d * eps32 * |q||d|, bounded here by 4 * d * eps32 * max|s|
            tol = 4 * dim * torch.finfo(torch.float32).eps * float(exact.abs().max())
            for k in k_values:
                scores, idx = topk_scores(queries, docs, k, backend="triton")
                _, ref_idx = topk_scores_reference(queries, docs, k)
                of_rows = exact.gather(1, idx)  # float64 score of each returned row
                score_err = float((scores.double() - of_rows).abs().max())
                kth_gap = float((exact.topk(k, dim=1).values - of_rows.sort(dim=1, descending=True).values).abs()
                                .max())
                rows_match = _rows_match(exact, idx, ref_idx, k, tol)
                rows.append(dict(dtype=dtype_name, B=b, k=k, N=n_docs, d=dim, tol=tol, max_score_err=score_err,
                                 max_kth_gap=kth_gap, rows_match=rows_match,
                                 ok=score_err <= tol and kth_gap <= tol and rows_match == 1.0))
    return rows


def _rows_match(exact: torch.Tensor, idx: torch.Tensor, ref_idx: torch.Tensor, k: int, tol: float) -> float:
    """Fraction of ranks, among those no near-tie can reorder (float64 gaps to both neighbours > tol, the (k+1)-th
    included), where the kernel and the float32 torch reference return the float64 ranking's row."""
    top = exact.topk(min(k + 1, exact.shape[1]), dim=1)
    s = top.values
    gaps = (s[:, :-1] - s[:, 1:]) > tol  # (B, k or k - 1): rank i clear of rank i + 1
    left = torch.cat([torch.ones_like(gaps[:, :1]), gaps], dim=1)[:, :k]
    right = torch.cat([gaps, torch.ones_like(gaps[:, :1])], dim=1)[:, :k]
    clear = left & right
    want = top.indices[:, :k]
    same = (idx == want) & (ref_idx == want)
    return float(same[clear].double().mean()) if bool(clear.any()) else 1.0


def bandwidth_summary(result: dict, max_b: int = 256) -> dict:
    """The Triton rows' lowest fraction of copy bandwidth for B <= max_b, and whether it meets the goal."""
    fracs = [r["frac_copy"] for r in result["rows"]
             if r["method"] == "triton" and r["B"] <= max_b and r["frac_copy"] is not None]
    worst = min(fracs) if fracs else None
    return dict(goal=BANDWIDTH_GOAL, worst_frac_copy=worst, met=worst is not None and worst >= BANDWIDTH_GOAL)


def tiny_training(steps: int, refresh_every: int, accelerator: str, run_dir: Path) -> dict:
    """`rag-e2e train` of the tiny end-to-end system for `steps` steps; its metrics and wall time."""
    from rag_e2e.compose import compose
    from rag_e2e.train import train

    trainer = "trainer=gpu" if accelerator == "gpu" else "trainer=cpu"
    cfg = compose([*TRAIN_OVERRIDES, trainer, f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
                   f"refresh.schedule={refresh_every}", f"run_dir={run_dir}"])
    metrics_file, wall_s = timed(train, cfg, progress=False)
    metrics = json.loads(metrics_file.read_text())
    return dict(steps=steps, refresh_every=refresh_every, accelerator=accelerator, wall_s=round(wall_s, 1),
                metrics=metrics, ok=metrics.get("train/steps") == steps and metrics.get("refresh/count", 0) >= 1)


def run(args: argparse.Namespace) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    began = time.perf_counter()
    out: dict = dict(device=device_label("cpu"), host=host_string(), torch=torch.__version__,
                     triton_available=topk_mod._topk_kernel is not None)
    if topk_mod._topk_kernel is None or not (device.type == "cuda" or topk_mod._topk_kernel.INTERPRET):
        out["correctness"] = dict(skipped="Triton cannot run here (no CUDA, TRITON_INTERPRET unset or no triton)")
    else:
        rows = check_correctness(device, args.dtypes, args.check_n, args.dim, args.check_b, args.check_k)
        out["correctness"] = dict(rows=rows, ok=all(r["ok"] for r in rows))
    print(f"correctness: {out['correctness'].get('ok', 'skipped')} ({time.perf_counter() - began:.0f} s)")
    bench_args = argparse.Namespace(quick=False, dtype=["bfloat16"], dim=args.dim, warmup=args.warmup,
                                    repeats=args.repeats, n=args.n, b=args.b, k=args.k)
    out["bench"] = bench.run(bench_args)
    out["bandwidth"] = bandwidth_summary(out["bench"])
    bench._print_table(out["bench"])
    print(f"bandwidth: {out['bandwidth']} ({time.perf_counter() - began:.0f} s)")
    if args.train_steps > 0:
        with tempfile.TemporaryDirectory() as tmp:
            out["training"] = tiny_training(args.train_steps, args.refresh_every,
                                            "gpu" if device.type == "cuda" else "cpu", Path(tmp) / "run")
        print(f"training: ok={out['training']['ok']} {out['training']['wall_s']} s")
    out["wall_s"] = round(time.perf_counter() - began, 1)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--dtypes", nargs="+", choices=sorted(_DTYPES), default=["float32", "bfloat16"],
                        help="correctness dtypes")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--check-n", type=int, default=20_011, help="passages in the correctness check")
    parser.add_argument("--check-b", type=int, nargs="+", default=[1, 7, 64])
    parser.add_argument("--check-k", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--n", type=int, nargs="+", default=[1_000_000, 4_000_000], help="bench passage counts")
    parser.add_argument("--b", type=int, nargs="+", default=[1, 16, 256], help="bench query batch sizes")
    parser.add_argument("--k", type=int, nargs="+", default=[10, 100], help="bench k values")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--train-steps", type=int, default=50, help="0 skips the training")
    parser.add_argument("--refresh-every", type=int, default=10)
    args = parser.parse_args(argv)
    positive = dict(dim=args.dim, check_n=args.check_n, repeats=args.repeats, refresh_every=args.refresh_every,
                    check_b=min(args.check_b), check_k=min(args.check_k), n=min(args.n), b=min(args.b), k=min(args.k))
    for name, value in positive.items():
        if value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1 (got {value})")
    if args.warmup < 0 or args.train_steps < 0:
        parser.error("--warmup and --train-steps must be >= 0")
    if max(args.check_k) > min(args.check_n, 128) or max(args.k) > min(min(args.n), 128):
        parser.error("k may not exceed the passages or 128 (the kernel's limit)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    write_result(args.out, result, indent=1, echo=False)
    ok = [result["correctness"].get("ok", True), result.get("training", {}).get("ok", True)]
    print(f"wrote {args.out}; correctness and training {'passed' if all(ok) else 'FAILED'}; "
          f"bandwidth goal {'met' if result['bandwidth']['met'] else 'not met'}")
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
