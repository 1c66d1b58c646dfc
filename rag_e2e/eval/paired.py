"""Paired comparisons of systems on the same questions: per-question scores and bootstrap confidence intervals.

Two systems evaluated on the same test questions are compared question by question (the paired design of Koehn
2004 and of most IR significance testing): for each question, its score under a system is the mean over that
system's runs (seeds pooled), the difference is system minus baseline, and the 95% confidence interval of the mean
difference is the percentile interval of its bootstrap distribution, resampling questions with replacement. An
interval that excludes 0 says the gap is larger than what resampling the questions would give by chance.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from rag_e2e.errors import DataFormatError, RagE2EError

from . import metrics as qa_metrics

_RECALL = re.compile(r"^recall@(\d+)$")
DEFAULT_PAIRED = ("recall@5", "em", "f1")


def question_score(record: dict, metric: str) -> float | None:
    """One question's score in [0, 1] from its predictions.jsonl record; None where the metric does not apply (an
    answer metric on a question the reader did not answer).

    Metrics: recall@k (1 if the first relevant passage is at rank <= k), mrr (1/rank, 0 if none), em, f1.
    """
    rank = record.get("gold_rank")
    if (m := _RECALL.match(metric)) is not None:
        return float(rank is not None and rank <= int(m.group(1)))
    if metric == "mrr":
        return 0.0 if rank is None else 1.0 / rank
    if metric in ("em", "f1"):
        answer = record.get("answer")
        if answer is None:
            return None
        score = qa_metrics.exact_match if metric == "em" else qa_metrics.f1_score
        return score(answer, record["gold"])
    raise RagE2EError(f"report: paired metric `{metric}` is not one of recall@K, mrr, em, f1")


def per_question(run_records: Sequence[Sequence[dict]], metric: str) -> dict[str, float]:
    """qid -> the question's score averaged over the runs that scored it (one run per seed)."""
    scores: dict[str, list[float]] = defaultdict(list)
    for records in run_records:
        for record in records:
            value = question_score(record, metric)
            if value is not None:
                scores[str(record["qid"])].append(value)
    return {qid: statistics.fmean(values) for qid, values in scores.items()}


def bootstrap_ci(differences: Sequence[float], *, confidence: float = 0.95, resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `differences` (resampling them with replacement).

    A constant sample has the degenerate interval (c, c).
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        raise ValueError("no differences to bootstrap")
    if np.all(d == d[0]):
        return float(d[0]), float(d[0])
    res = stats.bootstrap((d,), np.mean, confidence_level=confidence, n_resamples=resamples, method="percentile",
                          random_state=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


@dataclass
class PairedDiff:
    """System minus baseline on the questions both scored.

    Attributes:
        system, baseline: labels.
        metric: e.g. "recall@5".
        n_questions: questions in the comparison.
        mean: mean per-question difference (fraction, e.g. 0.05 = 5 points).
        low, high: its 95% bootstrap interval.
        wins, losses: questions where the system scored higher / lower (seed means).
    """

    system: str
    baseline: str
    metric: str
    n_questions: int
    mean: float
    low: float
    high: float
    wins: int
    losses: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_difference(system: dict[str, float], baseline: dict[str, float], *, system_label: str,
                      baseline_label: str, metric: str, resamples: int = 10_000, seed: int = 0) -> PairedDiff | None:
    """The paired comparison on the questions in both `per_question` maps (None if they share none)."""
    shared = sorted(set(system) & set(baseline))
    if not shared:
        return None
    d = [system[q] - baseline[q] for q in shared]
    low, high = bootstrap_ci(d, resamples=resamples, seed=seed)
    return PairedDiff(system=system_label, baseline=baseline_label, metric=metric, n_questions=len(shared),
                      mean=statistics.fmean(d), low=low, high=high, wins=sum(x > 0 for x in d),
                      losses=sum(x < 0 for x in d))


def read_records(run_dir: Path) -> list[dict]:
    """A run's predictions.jsonl (one record per test question)."""
    from rag_e2e.data.corpus import iter_jsonl

    path = run_dir / "predictions.jsonl"
    if not path.is_file():
        raise DataFormatError(path, None, None, "not found; paired comparisons read each run's test predictions")
    records = []
    for line, record in iter_jsonl(path):
        for key in ("qid", "gold", "gold_rank"):
            if key not in record:
                raise DataFormatError(path, line, key, "missing (a predictions.jsonl record of rag-e2e train)")
        records.append(record)
    return records
