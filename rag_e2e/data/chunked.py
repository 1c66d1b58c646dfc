"""SQuAD-layout articles cut into fixed-size passages, with gold passages found from each answer's start.

For knowledge bases whose articles are long documents (COVID-QA: one "paragraph" per scientific article, ~3,700
words on average), a passage per paragraph would not fit a reader's prompt. Each paragraph is cut into passages of
`chunk_words` whitespace-separated words (the last one shorter; passages never cross paragraphs), and a question's
gold passage is the one holding the first character of its answer.

Answer offsets are checked against the text: COVID-QA's `answer_start` is off by up to a few characters for about a
fifth of its answers (a leading space in the answer text), so an answer is looked for near its stated start first,
then anywhere in the paragraph; an answer found nowhere is an error naming the article and question.
"""

from __future__ import annotations

import bisect
import re
from pathlib import Path

from rag_e2e.data.corpus import json_field
from rag_e2e.data.qa import _object, _question, read_json_document
from rag_e2e.data.types import Passage, QAExample
from rag_e2e.errors import DataFormatError

_WORD = re.compile(r"\S+")
_SEARCH_WINDOW = 40  # characters either side of the stated answer_start searched before the whole paragraph


def load_squad_chunked(path: str | Path, chunk_words: int) -> tuple[list[QAExample], list[Passage]]:
    """Load a SQuAD v1.1-layout file as a corpus of `chunk_words`-word passages and questions with gold passages.

    Passage ids are "{article}-{paragraph}-{chunk}" (0-based); passage text is the chunk's words joined by single
    spaces. Every passage of an article carries the article's title: its `title` field, or, where the file has
    none (COVID-QA), the first line of its first paragraph. The title is also the question's group, so a split by
    group never puts one article in two splits. Answers are whitespace-normalised as the passages are.

    Args:
        path: the SQuAD-layout JSON (or a zip holding one).
        chunk_words: words per passage (>= 1).

    Returns:
        (questions, passages), both in file order.

    Raises:
        DataFormatError: a missing or mistyped field, an article with no text, an answer whose text is not in its
            paragraph, or a duplicate question id; the message names the article and the question id.
    """
    if chunk_words < 1:
        raise ValueError(f"chunk_words must be >= 1, got {chunk_words}")
    doc = read_json_document(path)
    if not isinstance(doc, dict):
        raise DataFormatError(path, None, None, "expected a JSON object with a 'data' list")
    examples: list[QAExample] = []
    passages: list[Passage] = []
    seen: dict[str, str] = {}
    for a, article in enumerate(json_field(path, None, doc, "data", list, "a list of articles")):
        at = f"data[{a}]"
        article = _object(path, None, article, at)
        paragraphs = json_field(path, None, article, "paragraphs", list, "a list", where=at)
        title = _article_title(path, article, paragraphs, at)
        if not paragraphs:
            raise DataFormatError(path, None, f"{at}.paragraphs", f"article '{title or a}' is empty (no paragraphs)")
        for p, para in enumerate(paragraphs):
            pat = f"{at}.paragraphs[{p}]"
            para = _object(path, None, para, pat)
            context = json_field(path, None, para, "context", str, "a string", where=pat)
            qas = json_field(path, None, para, "qas", list, "a list", where=pat)
            words = list(_WORD.finditer(context))
            if not words:
                first = f" (question id {_qid(qas[0])})" if qas and isinstance(qas[0], dict) else ""
                raise DataFormatError(path, None, f"{pat}.context", f"article '{title}' has no text{first}")
            starts = [w.start() for w in words[::chunk_words]]  # first character of each chunk
            for c in range(len(starts)):
                chunk = words[c * chunk_words : (c + 1) * chunk_words]
                passages.append(Passage(pid=f"{a}-{p}-{c}", text=" ".join(w.group() for w in chunk), title=title))
            for q, qa in enumerate(qas):
                qat = f"{pat}.qas[{q}]"
                record_no = len(examples) + 1
                qa = _object(path, record_no, qa, qat)
                qid = _qid(qa, path, record_no, qat)
                if qid in seen:
                    raise DataFormatError(path, record_no, f"{qat}.id", f"article '{title}': duplicate question id "
                                          f"'{qid}' (first in {seen[qid]})")
                seen[qid] = qat
                answers, chunks = [], []
                for i, answer in enumerate(_answer_list(path, record_no, qa, qat, title, qid)):
                    where = f"{qat}.answers[{i}]"
                    answer = _object(path, record_no, answer, where)
                    text = json_field(path, record_no, answer, "text", str, "a string", where=where)
                    start = json_field(path, record_no, answer, "answer_start", int, "an integer", where=where)
                    found = _locate(context, text, start)
                    if found is None:
                        raise DataFormatError(path, record_no, where, f"article '{title}', question id {qid}: the "
                                              f"answer {_preview(text)} is not in the article's text")
                    answers.append(" ".join(text.split()))
                    chunks.append(bisect.bisect_right(starts, found) - 1)
                examples.append(QAExample(
                    qid=qid, question=_question(path, record_no, qa, qat), answers=tuple(dict.fromkeys(answers)),
                    gold_pids=tuple(dict.fromkeys(f"{a}-{p}-{c}" for c in chunks)), group=title))
    return examples, passages


def _article_title(path: str | Path, article: dict, paragraphs: list, at: str) -> str:
    """The `title` field (underscores as spaces), else the first line of the first paragraph's text."""
    title = json_field(path, None, article, "title", str, "a string", where=at, default="").replace("_", " ")
    if title.strip() or not paragraphs or not isinstance(paragraphs[0], dict):
        return title.strip()
    context = paragraphs[0].get("context")
    lines = context.strip().splitlines() if isinstance(context, str) else []
    return " ".join(lines[0].split())[:200] if lines else ""


def _qid(qa: dict, path: str | Path | None = None, line: int | None = None, where: str = "") -> str:
    """A question id as a string (COVID-QA's ids are integers)."""
    qid = qa.get("id")
    if isinstance(qid, bool) or not isinstance(qid, (str, int)):
        if path is None:
            return "?"
        raise DataFormatError(path, line, f"{where}.id", "expected a string or integer id")
    return str(qid)


def _answer_list(path: str | Path, line: int, qa: dict, where: str, title: str, qid: str) -> list:
    answers = json_field(path, line, qa, "answers", list, "a list of answers", where=where)
    if not answers:
        raise DataFormatError(path, line, f"{where}.answers", f"article '{title}', question id {qid}: no answer "
                              "span (empty list)")
    return answers


def _locate(context: str, text: str, start: int) -> int | None:
    """Character offset of the answer's first non-space character in `context`: at `start` if it is there, else
    the first occurrence within `_SEARCH_WINDOW` characters of it, else the first anywhere, else None (no
    occurrence, or an answer of whitespace only)."""
    needle = text.strip()
    if not needle:
        return None
    lead = len(text) - len(text.lstrip())
    if context.startswith(needle, start + lead):
        return start + lead
    near = context.find(needle, max(start - _SEARCH_WINDOW, 0), start + len(text) + _SEARCH_WINDOW)
    if near >= 0:
        return near
    anywhere = context.find(needle)
    return anywhere if anywhere >= 0 else None


def _preview(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= width else text[: width - 3] + "...")
