"""Align a SQuAD-format QA file to prepared passages: the gold passage is the chunk holding the answer span.

The QA file was written against the same documents, but its contexts are raw paragraphs while the passages are
cleaned text of whole documents. An answer is found by its words and the words around it (cleaned the same way),
first in documents whose title is the article's title, then anywhere; the words around it decide which occurrence
of a common answer ("1990") is meant. A question whose answer cannot be placed is reported, not guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rag_e2e.data.qa import load_squad, read_json_document
from rag_e2e.prepare.chunk import Span
from rag_e2e.prepare.clean import clean_line

CONTEXT_WORDS = (8, 3, 0)  # words each side of the answer to match, tried in this order


@dataclass(frozen=True)
class QARecord:
    """One question, its cleaned answers, and the words of its first answer's occurrence in its context."""

    qid: str
    question: str
    answers: tuple[str, ...]
    title: str  # the article title, case-folded, to pick candidate documents
    left: tuple[str, ...]  # words before the answer in the context (at most CONTEXT_WORDS[0])
    answer: tuple[str, ...]
    right: tuple[str, ...]


def read_qa(path: str | Path) -> list[QARecord]:
    """The questions of a SQuAD v1.1-format file with what alignment needs.

    Raises:
        DataFormatError: the file is not valid SQuAD (see `load_squad`).
    """
    examples, _ = load_squad(path)  # validates every field; the raw walk below can index freely
    starts = [qa["answers"][0] for article in read_json_document(path)["data"]
              for para in article["paragraphs"] for qa in para["qas"]]
    records = []
    for ex, first in zip(examples, starts, strict=True):
        title, context = ex.context or ("", "")
        start = first.get("answer_start")
        text = first["text"]
        if not isinstance(start, int) or context[start:start + len(text)] != text:
            start = context.find(text)  # a missing or wrong offset: the first occurrence
        before, after = (context[:start], context[start + len(text):]) if start >= 0 else ("", "")
        n = CONTEXT_WORDS[0]
        records.append(QARecord(
            qid=ex.qid, question=ex.question, answers=tuple(clean_line(a) for a in ex.answers),
            title=clean_line(title).casefold(), left=tuple(clean_line(before).split()[-n:]) if n else (),
            answer=tuple(clean_line(text).split()), right=tuple(clean_line(after).split()[:n])))
    return records


def locate(record: QARecord, text: str) -> tuple[int, int] | None:
    """(start, end) of the record's answer in a cleaned document, or None.

    The answer is matched with `n` context words each side for each n in `CONTEXT_WORDS`; with no context words a
    match counts only when the answer occurs once in the document.
    """
    if not record.answer:
        return None
    for n in CONTEXT_WORDS:
        left, right = record.left[len(record.left) - n:] if n else (), record.right[:n]
        # \s* at the answer's edges: the span may start or end inside a token of the context ("Clara" in "Clara,")
        pattern = _words(left, r"\s*") + "(" + _words(record.answer, "") + ")" + _words(right, r"\s*", before=True)
        matches = list(re.finditer(pattern, text))
        if len(matches) == 1 or (matches and (left or right)):  # context words make a repeat the same place
            return matches[0].start(1), matches[0].end(1)
    return None


def gold_chunks(spans: list[Span], start: int, end: int) -> list[int]:
    """Indices of the chunks holding the whole answer span; if overlap left none, those holding part of it."""
    whole = [c for c, s in enumerate(spans) if s.start <= start and end <= s.end]
    return whole or [c for c, s in enumerate(spans) if s.start < end and start < s.end]


def _words(words: tuple[str, ...], joiner: str, before: bool = False) -> str:
    """A regex of words separated by any whitespace; `joiner` attaches it to the answer (after it if `before`)."""
    if not words:
        return ""
    body = r"\s+".join(re.escape(w) for w in words)
    if joiner == "":
        return body
    return joiner + body if before else body + joiner
