"""Benchmark RAG-Sequence decoding: "fast" vs "thorough" (rag_e2e.models.decoding) on the same retrieved passages.

    python -m rag_e2e.benchmarks.decoding [beams=N] [out=bench_results/decoding.json] [config overrides...]

Both decode every test question of the config (default: open-domain SQuAD's test split with MiniLM retrieving and
the pretrained Gemma-3-270m reader, the `squad_llm` setting, untrained) over the same top-k passages, alternately
per batch, with the reader's memo off so neither reuses the other's work. Prints answers/s, EM/F1 and the
(passage, answer) rows each rescored; writes JSON.
"""

from __future__ import annotations

import sys

import torch

from rag_e2e.benchmarks.common import Table, device_label, parse_options, timed, write_result
from rag_e2e.compose import compose
from rag_e2e.eval.metrics import exact_match, f1_score
from rag_e2e.losses import doc_log_prior
from rag_e2e.models.decoding import DECODINGS, sequence_decode
from rag_e2e.models.reader import MemoizedReader
from rag_e2e.train import assemble

DEFAULTS = ["experiment=squad_llm/rag_original", "logger.wandb=false", "logger.csv=false"]


class CountingReader:
    """The reader, counting the rows it scores teacher-forced (what rescoring costs)."""

    def __init__(self, reader):
        self.inner, self.rows = reader, 0

    def answer_logits(self, pairs, labels, max_source_length):
        self.rows += len(pairs)
        return self.inner.answer_logits(pairs, labels, max_source_length)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def bench(overrides: list[str], beams: int) -> dict:
    cfg = compose([*DEFAULTS, *overrides])
    parts = assemble(cfg, progress=False)
    rag = parts.module.rag.eval()
    index, _ = parts.refresh.builder.build(rag.encoder)
    rag.set_index(index)
    inner = rag.reader.inner if isinstance(rag.reader, MemoizedReader) else rag.reader
    reader = CountingReader(inner)
    parts.datamodule.setup("test")
    stats = {d: {"seconds": 0.0, "rows": 0, "answers": []} for d in DECODINGS}
    golds: list[list[str]] = []
    with torch.no_grad():
        for batch in parts.datamodule.test_dataloader():
            ret = rag.retrieve(batch.q_ids, batch.q_mask, rag.k, fresh=False)
            pairs = rag.pairs(batch.questions, ret.rows)
            log_prior = doc_log_prior(ret.doc_scores, rag.temperature)
            golds += [list(ex.answers) for ex in batch.examples]
            for decoding in DECODINGS:
                reader.rows = 0
                answers, seconds = timed(sequence_decode, reader, pairs, log_prior, decoding=decoding,
                                         num_beams=beams, max_new_tokens=cfg.eval.max_new_tokens,
                                         max_source_length=rag.max_source_length,
                                         max_target_length=rag.max_target_length)
                stats[decoding]["seconds"] += seconds
                stats[decoding]["rows"] += reader.rows
                stats[decoding]["answers"] += answers
    out = {"questions": len(golds), "k": rag.k, "beams": beams,
           "reader": cfg.generator.name_or_path or f"random {cfg.generator.arch}"}
    for decoding, s in stats.items():
        out[decoding] = {
            "seconds": s["seconds"], "answers_per_s": len(golds) / s["seconds"], "rescored_rows": s["rows"],
            "em": sum(exact_match(a, g) for a, g in zip(s["answers"], golds)) / len(golds),
            "f1": sum(f1_score(a, g) for a, g in zip(s["answers"], golds)) / len(golds),
        }
    out["same_answers"] = sum(a == b for a, b in zip(stats["fast"]["answers"], stats["thorough"]["answers"]))
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    opts, overrides = parse_options(args, {"beams": 2, "out": "bench_results/decoding.json"},
                                    prog="rag_e2e.benchmarks.decoding", doc=__doc__)
    device = device_label()
    r = bench(overrides, opts["beams"])
    print(f"device: {device}; reader {r['reader']}; {r['questions']} test questions, k={r['k']}, "
          f"{r['beams']} beams per passage")
    table = Table("<10", ">11.2f", ">8.1f", ">8.1f", ">15")
    print(table.header("decoding", "answers/s", "EM", "F1", "rescored rows"))
    for decoding in DECODINGS:
        d = r[decoding]
        print(table.row(decoding, d["answers_per_s"], 100 * d["em"], 100 * d["f1"], d["rescored_rows"]))
    print(f"same answer from both: {r['same_answers']} of {r['questions']}")
    write_result(opts["out"], {"device": device, "overrides": overrides, **r})
    return 0


if __name__ == "__main__":
    sys.exit(main())
