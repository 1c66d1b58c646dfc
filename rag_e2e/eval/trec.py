"""A run's retrieval as TREC files (run + qrels), scored by `ir_measures` (trec_eval's measures, as BEIR reports).

The run file holds, per test question, the passages the reader read, best first, with their scores
(`qid Q0 pid rank score tag`); the qrels hold each question's gold passage ids at relevance 1 (`qid 0 pid 1`).
Questions whose relevance is answer-string matching (no gold ids, e.g. NQ-open) have no qrels and are left out:
their relevant passages are known only among those retrieved.

trec_eval ranks by score (ties by passage id, descending), not by the order written, so where two scores tie its
ranks can differ from `gold_rank`'s; `ties` in the summary counts the questions where that can happen.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from rag_e2e import atomic
from rag_e2e.errors import DataFormatError
from rag_e2e.eval.predictions import Prediction

# Rprec: KILT's R-precision, here over gold passage ids (the questions with provenance: `judged`)
DEFAULT_MEASURES = ("nDCG@10", "RR", "Rprec", "Success@1", "Success@5", "Success@10", "R@10")


def judged(predictions: Sequence[Prediction]) -> list[Prediction]:
    """The predictions with gold passage ids (those the qrels can judge)."""
    return [p for p in predictions if p.gold_pids]


def run_lines(predictions: Sequence[Prediction], tag: str, path: Path | str = "predictions.jsonl") -> list[str]:
    """`qid Q0 pid rank score tag` per retrieved passage; ids with whitespace cannot be written (one line naming it)."""
    lines = []
    for line, p in enumerate(predictions, start=1):
        for rank, (pid, score) in enumerate(zip(p.retrieved, p.scores), start=1):
            _check_id(path, line, "retrieved", pid)
            lines.append(f"{_checked_qid(path, line, p.qid)} Q0 {pid} {rank} {score:.6g} {tag}")
    return lines


def qrels_lines(predictions: Sequence[Prediction], path: Path | str = "predictions.jsonl") -> list[str]:
    """`qid 0 pid 1` per gold passage id."""
    lines = []
    for line, p in enumerate(predictions, start=1):
        for pid in dict.fromkeys(p.gold_pids):
            _check_id(path, line, "gold_pids", pid)
            lines.append(f"{_checked_qid(path, line, p.qid)} 0 {pid} 1")
    return lines


def measure(predictions: Sequence[Prediction], measures: Sequence[str] = DEFAULT_MEASURES) -> dict[str, float]:
    """Mean of each `ir_measures` measure (e.g. "nDCG@10", "RR", "Success@5") over the judged predictions."""
    import ir_measures

    preds = judged(predictions)
    qrels = {p.qid: {pid: 1 for pid in p.gold_pids} for p in preds}
    run = {p.qid: dict(zip(p.retrieved, p.scores)) for p in preds}
    parsed = [ir_measures.parse_measure(m) for m in measures]
    values = ir_measures.calc_aggregate(parsed, qrels, run) if preds else {}
    return {m: float(values.get(pm, 0.0)) for m, pm in zip(measures, parsed)}


def ndcg_at(retrieved: Sequence[str], gold: set[str], k: int) -> float:
    """Binary-relevance nDCG@k as trec_eval defines it: Σ 1/log2(rank + 1) over relevant ranks ≤ k, divided by the
    same sum for the ideal ranking of min(|gold|, k) relevant passages. The float64 reference for tests."""
    dcg = sum(1.0 / math.log2(rank + 1) for rank, pid in enumerate(retrieved[:k], start=1) if pid in gold)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(gold), k) + 1))
    return dcg / ideal if ideal else 0.0


def write(predictions: Sequence[Prediction], out_dir: Path, tag: str, measures: Sequence[str] = DEFAULT_MEASURES,
          source: Path | str = "predictions.jsonl") -> dict:
    """run.trec, qrels.trec and trec_metrics.json into `out_dir` (all or none); returns the summary."""
    preds = judged(predictions)
    summary = {"questions": len(predictions), "judged": len(preds), "tag": tag, "measures": measure(preds, measures),
               "ties": sum(len(set(p.scores)) < len(p.scores) for p in preds),
               "retrieved_per_question": max((len(p.retrieved) for p in preds), default=0)}
    run, qrels = run_lines(preds, tag, source), qrels_lines(preds, source)

    atomic.write_files(out_dir, {"run.trec": lambda t: t.write_text("\n".join(run) + "\n"),
                                 "qrels.trec": lambda t: t.write_text("\n".join(qrels) + "\n"),
                                 "trec_metrics.json": lambda t: t.write_text(json.dumps(summary, indent=2) + "\n")})
    return summary


def _checked_qid(path, line: int, qid: str) -> str:
    _check_id(path, line, "qid", qid)
    return qid


def _check_id(path, line: int, field: str, value: str) -> None:
    if not value or any(ch.isspace() for ch in value):
        raise DataFormatError(path, line, field, f"{value!r} cannot be a TREC id (empty or holding whitespace)")
