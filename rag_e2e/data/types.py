"""Plain records passed between loaders, retrieval, the model and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Passage:
    """One knowledge-base entry. `pid` is unique within a corpus."""

    pid: str
    text: str
    title: str = ""


@dataclass(frozen=True)
class QAExample:
    """A question with its reference answers.

    `gold_pids` holds the ids of passages known to contain the answer (empty when the data has none, in which case
    recall falls back to answer-string matching). `group` is what splits must not cut across (a SQuAD article).
    `context` is an optional (title, text) passage the question was written against, used by the reader-only loss.
    """

    qid: str
    question: str
    answers: tuple[str, ...]
    gold_pids: tuple[str, ...] = ()
    group: str = ""
    context: tuple[str, str] | None = field(default=None, compare=False)
