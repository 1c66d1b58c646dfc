"""Benchmark index refresh: encoding throughput inside a refresh, and what async refresh costs training.

    python -m rag_e2e.bench_refresh [steps=N] [every=N] [rounds=N] [repeats=N] [out=bench_results/refresh.json]
                                    [config overrides...]

Two ratios (goal >= 0.9 each), measured in one process on one machine:
  1. refresh passages/s (IndexBuilder.build: fingerprint + encode from the token cache + build the index) / bare
     passage-tower forward passages/s over the same token batches (no index), timed alternately;
  2. training steps/s with async refresh every `every` steps / steps/s with refresh off (sync shown for scale),
     over `rounds` rounds in rotated order.
Training runs the end-to-end retriever (passage tower trained, fresh doc scores) on the synthetic KB.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch

from rag_e2e import atomic
from rag_e2e.compose import compose, split_options
from rag_e2e.train import assemble, build_trainer

DEFAULTS = ["experiment=synthetic_demo", "retriever=end2end", "refresh=sync", "data.synthetic.num_entities=800",
            "model.reader_warmup_steps=0", "logger.wandb=false", "logger.csv=false",
            "trainer.val_check_interval=100000", "refresh.save_index=false"]


class _StepClock(L.Callback):
    """Wall time of the training steps after `skip` warm-up steps."""

    def __init__(self, skip: int):
        self.skip, self.started, self.elapsed, self.steps = skip, None, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.skip:
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.started is not None:
            self.elapsed, self.steps = time.perf_counter() - self.started, trainer.global_step - self.skip


def bench_encoding(overrides: list[str], repeats: int = 5) -> dict:
    """Passages/s of a refresh build vs the bare passage-tower forward over the same token batches.

    The two are timed alternately (bare, refresh, bare, ...), so a change in background load hits both; the ratio
    is of the medians.
    """
    parts = assemble(compose([*DEFAULTS, *overrides]), progress=False)
    builder, encoder = parts.refresh.builder, parts.module.rag.encoder
    n = len(builder.corpus)
    batches = builder.token_batches(0, n)  # the very batches a refresh encodes
    encoder.eval()

    @torch.no_grad()
    def bare() -> None:
        for tok in batches:
            encoder.encode_passage(tok["input_ids"], tok["attention_mask"])

    def refresh() -> None:
        builder.build(encoder)

    times: dict[str, list[float]] = {"bare": [], "refresh": []}
    bare(), refresh()  # warm-up
    for _ in range(repeats):
        for name, fn in (("bare", bare), ("refresh", refresh)):
            began = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - began)
    bare_s, refresh_s = statistics.median(times["bare"]), statistics.median(times["refresh"])
    return {"passages": n, "repeats": repeats, "bare_passages_per_s": n / bare_s,
            "refresh_passages_per_s": n / refresh_s, "ratio": bare_s / refresh_s, "seconds": times}


def _train_once(overrides: list[str], mode: str, steps: int, every: int, skip: int,
                run_dir: Path) -> dict[str, float]:
    config_mode = "stale" if mode == "off" else mode  # the passage tower trains: no refresh is the stale ablation
    cfg = compose([*DEFAULTS, *overrides, f"refresh={config_mode}", f"refresh.schedule={every}",
                   f"trainer.max_steps={steps + skip}"])
    L.seed_everything(cfg.trainer.seed, verbose=False)
    parts = assemble(cfg, progress=False)
    trainer = build_trainer(cfg, run_dir, parts.refresh, progress=False, log=False)
    clock = _StepClock(skip)
    trainer.callbacks.append(clock)
    trainer.fit(parts.module, datamodule=parts.datamodule)
    return {"steps": clock.steps, "seconds": clock.elapsed, "steps_per_s": clock.steps / clock.elapsed,
            "refreshes": len(parts.refresh.history), "skipped": parts.refresh.skipped}


def bench_training(overrides: list[str], steps: int, every: int, rounds: int = 3, skip: int = 5,
                   run_root: Path = Path("bench_results") / "refresh_runs") -> dict:
    """Training steps/s with refresh off, async and sync (same data, seed and steps).

    Each round runs the three modes in a rotated order (off-async-sync, async-sync-off, ...), so none is always
    first under a drifting load; each mode's steps/s is the median over rounds, and the ratios are of medians.
    """
    modes = ("off", "async", "sync")
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for r in range(rounds):
        for mode in modes[r % 3:] + modes[: r % 3]:
            runs[mode].append(_train_once(overrides, mode, steps, every, skip, run_root / f"{mode}-{r}"))
    out = {}
    for mode in modes:
        rates = [x["steps_per_s"] for x in runs[mode]]
        out[mode] = {"steps": steps, "rounds": rounds, "steps_per_s": statistics.median(rates),
                     "refreshes": runs[mode][0]["refreshes"], "skipped": max(x["skipped"] for x in runs[mode]),
                     "runs": runs[mode]}
    for mode in ("async", "sync"):
        out[mode]["ratio_vs_off"] = out[mode]["steps_per_s"] / out["off"]["steps_per_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    opts = {"steps": "60", "every": "20", "rounds": "3", "repeats": "5", "out": "bench_results/refresh.json"}
    opts, overrides = split_options(args, opts)
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    enc = bench_encoding(overrides, int(opts["repeats"]))
    out = Path(opts["out"])
    train = bench_training(overrides, int(opts["steps"]), int(opts["every"]), int(opts["rounds"]),
                           run_root=out.parent / "refresh_runs")
    print(f"device: {device}; corpus {enc['passages']} passages; refresh every {opts['every']} steps; "
          f"medians of {opts['repeats']} encodings and {opts['rounds']} training rounds")
    print(f"{'measure':<44}{'value':>12}{'ratio':>8}")
    print(f"{'bare passage-tower forward (passages/s)':<44}{enc['bare_passages_per_s']:>12.0f}")
    print(f"{'refresh build (passages/s)':<44}{enc['refresh_passages_per_s']:>12.0f}{enc['ratio']:>8.2f}")
    for mode in ("off", "async", "sync"):
        row = train[mode]
        ratio = f"{row['ratio_vs_off']:>8.2f}" if mode != "off" else ""
        label = f"train steps/s, refresh {mode} ({row['refreshes']} refreshes)"
        print(f"{label:<44}{row['steps_per_s']:>12.2f}{ratio}")
    atomic.write_json(out, {"device": device, "overrides": overrides, "every": int(opts["every"]), "encoding": enc,
                            "training": train})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
