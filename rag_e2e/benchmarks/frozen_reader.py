"""Benchmark the frozen reader's two costs, before and after the levers that make the COVID-QA table fit a CPU.

    python -m rag_e2e.benchmarks.frozen_reader [questions=N] [out=bench_results/frozen_reader.json] [overrides...]

On the same N test questions and their fixed-retriever top-k passages (default: experiment=covidqa/fixed_retriever,
N = 24, k = 5), each variant answers every question (RAG-Sequence fast decoding: a greedy answer per passage, each
scored on its own passage) and scores the gold answer on every (question, passage) row (what retriever training
pays per step):

    float32                 the reader as loaded before (float32, outputs kept in memory within a run only)
    <measured dtype>        the dtype `generator.dtype=auto` measures on this machine (bfloat16 where the CPU has
                            bf16 units), cold: empty memory and an empty on-disk cache
    <measured dtype>, warm  a second run (another seed, another system) reading the on-disk cache the cold run wrote

Answers/s and scored rows/s per variant; the warm run's outputs must equal the cold run's exactly (answers and
log-likelihoods, bit for bit), and the float32 and measured-dtype runs are compared (answers agreeing, largest
log-likelihood difference), since a dtype change is not output-preserving.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from rag_e2e.benchmarks.common import Table, host_string, parse_options, timed, write_result
from rag_e2e.compose import compose
from rag_e2e.models.generator import build_reader, frozen_reader_dtype, prompt_format
from rag_e2e.models.rag import Retrieved
from rag_e2e.models.reader import MemoizedReader, token_ll
from rag_e2e.models.reader_cache import ReaderStore, reader_fingerprint
from rag_e2e.train import assemble

DEFAULTS = ["experiment=covidqa/fixed_retriever", "logger.wandb=false", "logger.csv=false"]


def _run(rag, reader, questions, ret, labels, cfg) -> dict:
    """Answer every question and score the gold answers on every row with `reader`; seconds and outputs."""
    rag.reader = reader
    answers, answer_s = timed(rag.generate, questions, ret, cfg.eval.num_beams, cfg.eval.max_new_tokens)
    pairs = rag.pairs(questions, ret.rows)
    rows = labels.repeat_interleave(ret.rows.shape[1], dim=0)
    ll, score_s = timed(token_ll, reader, pairs, rows, rag.max_source_length)
    return {"answers": answers, "ll": ll, "answer_s": answer_s, "score_s": score_s, "rows": len(pairs)}


def bench(overrides: list[str], n_questions: int) -> dict:
    cfg = compose([*DEFAULTS, *overrides])
    cfg.generator = replace(cfg.generator, dtype="float32", cache_outputs=False)
    parts = assemble(cfg, progress=False)
    rag = parts.module.rag.eval()
    index, _ = parts.refresh.builder.build(rag.encoder)
    rag.set_index(index)
    examples = parts.data.test[:n_questions]
    batch = parts.datamodule.collator(examples)
    with torch.no_grad():
        ret = rag.retrieve(batch.q_ids, batch.q_mask, rag.k, fresh=False)
    ret = Retrieved(rows=ret.rows, doc_scores=ret.doc_scores.detach())
    questions, labels = batch.questions, batch.labels

    before = _run(rag, rag.reader, questions, ret, labels, cfg)  # float32, memory only, cold
    inner = build_reader(cfg.generator).inner
    dtype = frozen_reader_dtype(inner, cfg.generator.max_source_length)
    inner.model.to(dtype)
    fingerprint = reader_fingerprint(inner.model, inner.tokenizer, prompt_format(cfg.generator))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "reader_outputs.sqlite"
        cold = _run(rag, MemoizedReader(inner, ReaderStore(db, fingerprint)), questions, ret, labels, cfg)
        warm = _run(rag, MemoizedReader(inner, ReaderStore(db, fingerprint)), questions, ret, labels, cfg)
    name = str(dtype).removeprefix("torch.")
    # Labelled by cache state too: with float32 measured fastest, "float32" alone would overwrite the plain run.
    variants = {"float32": before, f"{name}, cold disk cache": cold, f"{name}, warm disk cache": warm}
    table = {label: {"answers_per_s": n_questions / v["answer_s"], "scored_rows_per_s": v["rows"] / v["score_s"],
                     "answer_s": round(v["answer_s"], 6), "score_s": round(v["score_s"], 6)}
             for label, v in variants.items()}
    return {
        "host": host_string(), "questions": n_questions, "k": rag.k, "rows": before["rows"],
        "reader": cfg.generator.name_or_path, "measured_dtype": name, "variants": table,
        "warm_equals_cold": cold["answers"] == warm["answers"] and torch.equal(cold["ll"], warm["ll"]),
        "dtype_vs_float32": {
            "answers_agreeing": sum(a == b for a, b in zip(before["answers"], cold["answers"])) / n_questions,
            "max_abs_ll_diff": float((before["ll"] - cold["ll"]).abs().max()),
            "mean_abs_answer_ll_diff": float((before["ll"].sum(1) - cold["ll"].sum(1)).abs().mean()),
        },
        "overrides": overrides,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    opts, overrides = parse_options(args, {"questions": 24, "out": "bench_results/frozen_reader.json"},
                                    prog="rag_e2e.benchmarks.frozen_reader", doc=__doc__)
    result = bench(overrides, opts["questions"])
    base = result["variants"]["float32"]
    print(f"host: {result['host']}; reader {result['reader']}; {result['questions']} questions x k={result['k']} "
          f"= {result['rows']} rows")
    table = Table("<34", ">10.2f", ">6.1f", ">15.2f", ">6.1f")
    print(table.header("variant", "answers/s", "x", "scored rows/s", "x"))
    for label, v in result["variants"].items():
        print(table.row(label, v["answers_per_s"], v["answers_per_s"] / base["answers_per_s"],
                        v["scored_rows_per_s"], v["scored_rows_per_s"] / base["scored_rows_per_s"]))
    same = result["dtype_vs_float32"]
    print(f"warm cache outputs identical to the cold run's: {result['warm_equals_cold']}")
    print(f"{result['measured_dtype']} vs float32: {100 * same['answers_agreeing']:.0f}% of answers identical, "
          f"largest per-token log-likelihood difference {same['max_abs_ll_diff']:.3f}, mean per-answer "
          f"{same['mean_abs_answer_ll_diff']:.3f} nats")
    write_result(opts["out"], result)
    return 0 if result["warm_equals_cold"] else 1


if __name__ == "__main__":
    sys.exit(main())
