"""Benchmark what RAG costs on top of its reader: a RAG training step vs the bare reader on the same tokens.

    python -m rag_e2e.benchmarks.reader [steps=N] [warmup=N] [out=bench_results/reader.json] [config overrides...]

Both sides run forward + backward (no optimizer step), alternately, on the same batches:
  RAG step:   encode the questions (live query tower), search the index, doc scores, read the k (question,
              passage) pairs, marginalize, backward through reader and retriever;
  bare step:  the reader's answer log-likelihood on exactly the pairs and answers the RAG step read, backward.
Tokens/s counts the reader's non-pad input tokens; overhead = 1 - (RAG tokens/s) / (bare tokens/s), goal <= 15%.
Defaults: open-domain SQuAD (shared data), MiniLM retriever, the packaged SmolLM2-135M reader fully trained, k=4.
"""

from __future__ import annotations

import statistics
import sys

import torch

from rag_e2e.benchmarks.common import Table, device_label, medians, parse_options, timed, write_result
from rag_e2e.compose import compose
from rag_e2e.losses import sequence_marginal_nll
from rag_e2e.models.reader import Pairs, answer_token_ll
from rag_e2e.train import assemble

DEFAULTS = ["data=squad", "encoder=minilm", "generator=smollm2_135m", "retriever.k=4", "data.batch_size=4",
            "encoder.max_passage_length=128", "generator.max_source_length=192", "generator.max_target_length=12",
            "logger.wandb=false", "logger.csv=false"]


def _reader_tokens(reader, pairs: Pairs, labels: torch.Tensor, max_source_length: int) -> int:
    """Non-pad tokens the reader reads for these pairs (prompt or encoder input, plus the answers)."""
    if hasattr(reader, "sequences"):
        return int(reader.sequences(pairs, labels, max_source_length)["attention_mask"].sum())
    return int(reader.sources(pairs, max_source_length)["attention_mask"].sum() + labels.ne(-100).sum())


def _rag_step(rag, batch) -> tuple[float, torch.Tensor]:
    """Seconds of one RAG forward + backward, and the rows it read."""

    def step():
        out = rag(batch.q_ids, batch.q_mask, batch.questions, batch.labels)
        sequence_marginal_nll(out.scores, rag.temperature).mean().backward()
        return out.retrieved.rows

    rag.zero_grad(set_to_none=True)
    rows, seconds = timed(step)
    return seconds, rows


def _bare_step(rag, pairs: Pairs, labels: torch.Tensor) -> float:
    """Seconds of the reader's own forward + backward on the same rows."""

    def step():
        (-answer_token_ll(rag.reader, pairs, labels, rag.max_source_length).sum(1)).mean().backward()

    rag.zero_grad(set_to_none=True)
    return timed(step)[1]


def bench(overrides: list[str], steps: int, warmup: int) -> dict:
    cfg = compose([*DEFAULTS, *overrides])
    parts = assemble(cfg, progress=False)
    index, _ = parts.refresh.builder.build(parts.module.rag.encoder)
    rag = parts.module.rag
    rag.set_index(index)
    rag.train()
    batches = iter(parts.datamodule.train_dataloader())
    seconds: dict[str, list[float]] = {"rag": [], "bare": []}
    tokens: list[int] = []
    for step in range(warmup + steps):
        batch = next(batches)
        batch = batch["rag"] if isinstance(batch, dict) else batch
        t_rag, rows = _rag_step(rag, batch)
        pairs = rag.pairs(batch.questions, rows)
        labels = batch.labels.repeat_interleave(rows.shape[1], dim=0)
        t_bare = _bare_step(rag, pairs, labels)
        if step >= warmup:
            seconds["rag"].append(t_rag)
            seconds["bare"].append(t_bare)
            tokens.append(_reader_tokens(rag.reader, pairs, labels, rag.max_source_length))
    per_step = statistics.median(tokens)
    out = {"steps": steps, "reader_tokens_per_step": per_step, "seconds": seconds,
           "reader_rows_per_step": len(pairs), "reader": cfg.generator.name_or_path or f"random {cfg.generator.arch}"}
    for name, median in medians(seconds).items():
        out[f"{name}_tokens_per_s"] = per_step / median
    out["overhead"] = 1.0 - out["rag_tokens_per_s"] / out["bare_tokens_per_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    opts, overrides = parse_options(args, {"steps": 8, "warmup": 2, "out": "bench_results/reader.json"},
                                    prog="rag_e2e.benchmarks.reader", doc=__doc__)
    device = device_label()
    result = bench(overrides, opts["steps"], opts["warmup"])
    print(f"device: {device}; reader {result['reader']}; {result['reader_rows_per_step']} (question, passage) rows, "
          f"{result['reader_tokens_per_step']:.0f} reader tokens per step; medians of {result['steps']} steps")
    table = Table("<48", ">10.0f")
    print(table.header("measure", "tokens/s"))
    print(table.row("bare reader forward + backward", result["bare_tokens_per_s"]))
    print(table.row("RAG training step (retrieve, read, marginalize)", result["rag_tokens_per_s"]))
    print(table.row("overhead of retrieval + marginalization", f"{100 * result['overhead']:.1f}%") + "  (goal <= 15%)")
    write_result(opts["out"], {"device": device, "overrides": overrides, **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
