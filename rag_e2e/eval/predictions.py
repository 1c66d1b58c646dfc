"""A run's predictions.jsonl, one checked `Prediction` per test question (the HTML page and TREC export read it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag_e2e.data.corpus import iter_jsonl, json_field
from rag_e2e.errors import DataFormatError


@dataclass(frozen=True)
class Prediction:
    """One line of predictions.jsonl (written by `RagLitModule._eval_step`).

    Attributes:
        qid: question id.
        question: the question text.
        answer: the generated answer; None for a question outside `eval.generation_questions` (retrieval only).
        gold: reference answers.
        gold_pids: ids of passages known to hold the answer; empty when relevance is answer-string matching.
        gold_rank: 1-based rank of the first relevant passage among max(retriever.k, eval.ks) retrieved, or None.
        retrieved: ids of the passages the reader read, best first (the top retriever.k).
        scores: retrieval scores aligned with `retrieved`.
    """

    qid: str
    question: str
    answer: str | None
    gold: tuple[str, ...]
    gold_pids: tuple[str, ...]
    gold_rank: int | None
    retrieved: tuple[str, ...]
    scores: tuple[float, ...]

    @property
    def hit(self) -> bool:
        """Whether a relevant passage is among those the reader read."""
        return self.gold_rank is not None and self.gold_rank <= len(self.retrieved)


def read_predictions(path: Path) -> list[Prediction]:
    """Load and check a run's predictions.jsonl.

    Args:
        path: the file; blank lines are skipped.

    Returns:
        The records in file order.

    Raises:
        DataFormatError: the file is missing, empty or not JSON lines, or a record lacks a field or mistypes it.
    """
    predictions = [_prediction(path, line, record) for line, record in iter_jsonl(path)]
    if not predictions:
        raise DataFormatError(path, None, None, "no predictions (the file is empty)")
    return predictions


def _prediction(path: Path, line: int, record: dict[str, Any]) -> Prediction:
    def field(key: str, types: type | tuple[type, ...], expected: str) -> Any:
        return json_field(path, line, record, key, types, expected)

    rank = field("gold_rank", (int, type(None)), "a positive integer or null")
    if rank is not None and rank < 1:
        raise DataFormatError(path, line, "gold_rank", f"expected a positive integer or null, got {rank}")
    retrieved = _strings(path, line, record, "retrieved")
    scores = field("scores", list, "a list of numbers")
    if not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores):
        raise DataFormatError(path, line, "scores", "expected a list of numbers")
    if len(scores) != len(retrieved):
        raise DataFormatError(path, line, "scores", f"{len(scores)} scores for {len(retrieved)} retrieved passages")
    gold = _strings(path, line, record, "gold")
    if not gold:
        raise DataFormatError(path, line, "gold", "no reference answer")
    return Prediction(qid=str(field("qid", (str, int), "a string")), question=field("question", str, "a string"),
                      answer=field("answer", (str, type(None)), "a string or null"), gold=gold,
                      gold_pids=_strings(path, line, record, "gold_pids"), gold_rank=rank, retrieved=retrieved,
                      scores=tuple(float(s) for s in scores))


def _strings(path: Path, line: int, record: dict[str, Any], key: str) -> tuple[str, ...]:
    values = json_field(path, line, record, key, list, "a list of strings")
    if not all(isinstance(v, str) for v in values):
        raise DataFormatError(path, line, key, "expected a list of strings")
    return tuple(values)
