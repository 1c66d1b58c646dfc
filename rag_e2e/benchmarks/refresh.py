"""Benchmark index refresh: encoding throughput inside a refresh, and what async refresh costs training.

    python -m rag_e2e.benchmarks.refresh [steps=N] [every=N] [rounds=N] [repeats=N] [out=bench_results/refresh.json]
                                         [config overrides...]
    python -m rag_e2e.benchmarks.refresh scale=1000000 [steps=200] [train_threads=2,1] [repeats=1]
                                         [out=bench_results/refresh_scale.json]
                                         (steps=0: the encoding half only)

Two ratios (goal >= 0.9 each), measured in one process on one machine:
  1. refresh passages/s (IndexBuilder.build: fingerprint + encode from the token cache + build the index) / bare
     passage-tower forward passages/s over the same token batches (no index), timed alternately;
  2. training steps/s with async refresh every `every` steps / steps/s with refresh off (sync shown for scale),
     over `rounds` rounds in rotated order.
Also timed in the same rotation: a partial refresh's encoding of a random fifth of the rows (`encode_rows`, tokens
from the per-row cache) and the same rows tokenized anew, each as passages/s against the bare forward's.
Training runs the end-to-end retriever (passage tower trained, fresh doc scores) on the synthetic KB.

`scale=N`: the synthetic KB padded to N passages with distractors (`data.synthetic.distractor_passages`), vectors in
a float16 memmap on disk (`index.embeddings_dir`). Timed: tokenizing the corpus into the builder's per-row token
cache (what a run's first build does, once), then `repeats` rounds, in ABBA order, of the bare tower forward over
batches padded beforehand from that cache and a refresh build (pad each batch from the cache, encode, write the
memmap, build the index); peak RAM (max RSS) and disk (the embeddings directory). Then training steps/s with an
async refresh in flight against training with none (`refresh=stale`), `steps` steps each after `skip` warm-up
steps, once per training thread count in `train_threads` (default: torch's current count).
"""

from __future__ import annotations

import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch

from rag_e2e.benchmarks.common import (
    Table,
    device_label,
    medians,
    parse_options,
    schedule,
    time_alternately,
    timed,
    write_result,
)
from rag_e2e.compose import compose
from rag_e2e.retrieval.encoders import tokenize_passages
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

    # A partial refresh's rows: a random fifth of the corpus, in no order (refresh=partial_20_final's budget).
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: max(1, n // 5)]

    def partial() -> None:
        builder.encode_rows(encoder, rows)  # tokens from the per-row cache

    @torch.no_grad()
    def partial_retokenized() -> None:  # what encode_rows did before the cache: tokenize the picked rows anew
        for i in range(0, rows.numel(), builder.batch_size):
            batch = [builder.corpus[r] for r in rows[i : i + builder.batch_size].tolist()]
            tok = tokenize_passages(builder.tokenizer, batch, builder.max_length)
            encoder.encode_passage(tok["input_ids"], tok["attention_mask"])

    fns = {"bare": bare, "refresh": refresh, "partial": partial, "partial_retokenized": partial_retokenized}
    # one warm-up round (builds the token caches), then `repeats` rounds in the same order
    times = time_alternately(fns, repeats, warmup=1, order="fixed")
    median = medians(times)
    bare_per_row = median["bare"] / n
    out = {"passages": n, "partial_rows": rows.numel(), "repeats": repeats,
           "bare_passages_per_s": n / median["bare"], "refresh_passages_per_s": n / median["refresh"],
           "ratio": median["bare"] / median["refresh"], "seconds": times}
    for name in ("partial", "partial_retokenized"):
        out[f"{name}_passages_per_s"] = rows.numel() / median[name]
        out[f"{name}_ratio"] = bare_per_row * rows.numel() / median[name]  # vs the bare forward, per passage
    return out


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
    for r, order in enumerate(schedule(modes, rounds, "rotate")):
        for mode in order:
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


def _max_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _disk_gb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**30 if path.exists() else 0.0


class _PendingClock(_StepClock):
    """`_StepClock` that also counts the measured steps run while an async refresh was in flight."""

    def __init__(self, refresh, skip: int):
        super().__init__(skip)
        self.refresh, self.pending_steps = refresh, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.started is not None:
            self.pending_steps += self.refresh.in_flight


def _scale_encoding(common: list[str], emb_dir: Path, repeats: int = 1) -> tuple[dict, float]:
    """The encoding half of `bench_scale`; also returns the embeddings directory's peak size (GB).

    `repeats` rounds of (bare, refresh) in ABBA order (bare, refresh, refresh, bare, ...), so a load that drifts
    linearly over the run hits both alike; the ratio is of medians. Each refresh writes a fresh memmap (the previous
    one is discarded first: a finished one would be reused, not re-encoded)."""
    parts = assemble(compose(common), progress=False)
    builder, encoder = parts.refresh.builder, parts.module.rag.encoder
    n = len(builder.corpus)
    encoder.eval()
    tokens, tokenize_s = timed(builder.row_tokens, 0, n)  # a run's first build tokenizes; later refreshes read this
    bs = builder.batch_size
    batches = [tokens.batch(torch.arange(i, min(i + bs, n))) for i in range(0, n, bs)]  # the bare forward's input

    @torch.no_grad()
    def bare() -> None:
        for tok in batches:
            encoder.encode_passage(tok["input_ids"], tok["attention_mask"])

    with torch.no_grad():  # warm-up: first calls allocate and pick kernels
        for tok in batches[:5]:
            encoder.encode_passage(tok["input_ids"], tok["attention_mask"])
    built: list[Path | None] = []

    def refresh() -> None:
        for path in built:
            builder.discard(path)
        built[:] = [builder.build(encoder)[1].embeddings_path]

    disk, order = [0.0], []

    def after(name: str) -> None:  # outside the timed call
        order.append(name)
        disk[0] = max(disk[0], _disk_gb(emb_dir))

    runs = time_alternately({"bare": bare, "refresh": refresh}, repeats, order="abba", after=after)
    seconds = medians(runs)
    encoding = {"passages": n, "dim": encoder.passage_model.config.hidden_size, "tokenize_s": tokenize_s,
                "repeats": repeats, "order": order, "bare_runs_s": runs["bare"], "refresh_runs_s": runs["refresh"],
                "bare_s": seconds["bare"], "refresh_s": seconds["refresh"],
                "bare_passages_per_s": n / seconds["bare"], "refresh_passages_per_s": n / seconds["refresh"],
                "ratio": seconds["bare"] / seconds["refresh"],
                "first_build_passages_per_s": n / (seconds["refresh"] + tokenize_s),
                "peak_rss_gb": _max_rss_gb(), "embeddings_disk_gb": _disk_gb(emb_dir)}
    return encoding, disk[0]


def _scale_training(common: list[str], steps: int, skip: int, work: Path) -> dict:
    """Training steps/s with no refresh (`refresh=stale`) and with an async refresh in flight, at the current
    torch thread count; the async refresh's encoder runs on its own `refresh.cpu_worker_threads`."""
    train = {"threads": torch.get_num_threads()}
    for mode in ("stale", "async"):  # stale: no refresh while the passage tower trains
        cfg = compose([*common, f"refresh={mode}", f"refresh.schedule={skip}", f"trainer.max_steps={steps + skip}"])
        L.seed_everything(cfg.trainer.seed, verbose=False)
        run_parts = assemble(cfg, progress=False)
        trainer = build_trainer(cfg, work / f"scale-{mode}", run_parts.refresh, progress=False, log=False)
        clock = _PendingClock(run_parts.refresh, skip)
        trainer.callbacks.append(clock)
        trainer.fit(run_parts.module, datamodule=run_parts.datamodule)
        train[mode] = {"steps": clock.steps, "seconds": clock.elapsed, "steps_per_s": clock.steps / clock.elapsed,
                       "steps_with_refresh_in_flight": clock.pending_steps,
                       "refresh_wall_s": [h["wall_s"] for h in run_parts.refresh.history]}
        del run_parts, trainer
    train["async"]["ratio_vs_none"] = train["async"]["steps_per_s"] / train["stale"]["steps_per_s"]
    return train


def bench_scale(overrides: list[str], passages: int, steps: int, skip: int, work: Path,
                train_threads: list[int] | None = None, repeats: int = 1) -> dict:
    """Refresh of a `passages`-row corpus in a float16 memmap, and async refresh's cost to training, at that scale.

    `train_threads`: run the training half once per torch thread count for training (default: the current one);
    on a CPU, a count that leaves the worker's cores free separates the async machinery's own cost from the cores
    the two share. `repeats`: rounds of the encoding half's (bare, refresh) pair, ABBA order, medians.
    """
    kb = compose([*DEFAULTS, *overrides])
    distractors = passages - (kb.data.synthetic.num_entities * kb.data.synthetic.attributes_per_entity)
    emb_dir = work / "scale_embeddings"
    shutil.rmtree(emb_dir, ignore_errors=True)
    common = [*DEFAULTS, *overrides, f"data.synthetic.distractor_passages={distractors}",
              f"index.embeddings_dir={emb_dir}", "index.embeddings_dtype=float16"]
    encoding, disk = _scale_encoding(common, emb_dir, repeats)
    training = []
    before = torch.get_num_threads()
    for threads in (train_threads or [before]) if steps else ():
        torch.set_num_threads(threads)
        try:
            training.append(_scale_training(common, steps, skip, work))
        finally:
            torch.set_num_threads(before)
    peak = {"peak_rss_gb": _max_rss_gb(), "peak_disk_gb": disk}
    shutil.rmtree(emb_dir, ignore_errors=True)
    return {"encoding": encoding, "training": training, **peak}


def _print_scale(result: dict, device: str) -> None:
    enc = result["encoding"]
    print(f"device: {device}; corpus {enc['passages']:,} passages, d={enc['dim']}, float16 memmap; "
          f"encodings: medians of {enc['repeats']} ABBA rounds")
    table = Table("<52", ">12.0f", ">8.2f")
    print(table.header("measure", "value", "ratio"))
    print(table.row("bare passage-tower forward (passages/s)", enc["bare_passages_per_s"]))
    print(table.row("refresh build, cached tokens + memmap (passages/s)", enc["refresh_passages_per_s"], enc["ratio"]))
    print(table.row("tokenizing the corpus, once per run (s)", f"{enc['tokenize_s']:.1f}"))
    print(table.row("  first build of a run, incl. tokenizing (passages/s)", enc["first_build_passages_per_s"]))
    for train in result["training"]:
        threads = f"training on {train['threads']} thread{'s' if train['threads'] > 1 else ''}"
        print(table.row("train steps/s, no refresh, " + threads, f"{train['stale']['steps_per_s']:.2f}"))
        label = f"  async refresh in flight ({train['async']['steps_with_refresh_in_flight']} steps)"
        print(table.row(label, f"{train['async']['steps_per_s']:.2f}", train["async"]["ratio_vs_none"]))
    print(table.row("peak RAM (max RSS, GB)", f"{result['peak_rss_gb']:.2f}"))
    print(table.row("peak disk (embeddings, GB)", f"{result['peak_disk_gb']:.2f}"))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # steps, repeats, out: None until given, their defaults differ between the two modes
    defaults = {"steps": int, "every": 20, "rounds": 3, "repeats": int, "out": str, "scale": 0, "skip": 5,
                "train_threads": list[int]}
    opts, overrides = parse_options(args, defaults, prog="rag_e2e.benchmarks.refresh", doc=__doc__)
    device = device_label()

    def given(key: str, default: object):
        return default if opts[key] is None else opts[key]

    if opts["scale"]:
        out = Path(given("out", "bench_results/refresh_scale.json"))
        repeats = given("repeats", 1)  # each pass at 1M takes minutes: one (bare, refresh) pair by default
        result = bench_scale(overrides, opts["scale"], given("steps", 200), opts["skip"],
                             out.parent / "refresh_scale_work", opts["train_threads"], repeats)
        _print_scale(result, device)
        write_result(out, {"device": device, "overrides": overrides, **result})
        return 0
    out, repeats = Path(given("out", "bench_results/refresh.json")), given("repeats", 5)
    enc = bench_encoding(overrides, repeats)
    train = bench_training(overrides, given("steps", 60), opts["every"], opts["rounds"],
                           run_root=out.parent / "refresh_runs")
    print(f"device: {device}; corpus {enc['passages']} passages; refresh every {opts['every']} steps; "
          f"medians of {repeats} encodings and {opts['rounds']} training rounds")
    table = Table("<44", ">12.0f", ">8.2f")
    print(table.header("measure", "value", "ratio"))
    print(table.row("bare passage-tower forward (passages/s)", enc["bare_passages_per_s"]))
    print(table.row("refresh build (passages/s)", enc["refresh_passages_per_s"], enc["ratio"]))
    partial_rows = (("partial", "partial rows, cached tokens"), ("partial_retokenized", "partial rows, tokenized anew"))
    for name, label in partial_rows:
        label = f"{label} ({enc['partial_rows']}, passages/s)"
        print(table.row(label, enc[name + "_passages_per_s"], enc[name + "_ratio"]))
    for mode in ("off", "async", "sync"):
        row = train[mode]
        label = f"train steps/s, refresh {mode} ({row['refreshes']} refreshes)"
        print(table.row(label, f"{row['steps_per_s']:.2f}", row.get("ratio_vs_off")))
    write_result(out, {"device": device, "overrides": overrides, "every": opts["every"], "encoding": enc,
                       "training": train})
    return 0


if __name__ == "__main__":
    sys.exit(main())
