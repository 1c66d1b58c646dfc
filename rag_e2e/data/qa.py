"""Question-answering loaders (SQuAD v1.1, NQ-open, generic JSONL, Parquet of either) and a group-disjoint
train/val/test split.

Every malformed input raises `DataFormatError` naming file, line (or record number) and field.
"""

from __future__ import annotations

import itertools
import json
import random
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from rag_e2e.data.corpus import data_suffix, iter_jsonl, json_field, load_nonempty
from rag_e2e.data.parquet_records import iter_parquet_records
from rag_e2e.data.types import Passage, QAExample
from rag_e2e.errors import DataFormatError


def load_squad(path: str | Path) -> tuple[list[QAExample], list[Passage]]:
    """Load a SQuAD v1.1-format file (`.json`, or a `.zip` holding exactly one `.json` member).

    Each paragraph becomes a Passage with the stable pid "{article_index}-{paragraph_index}" (0-based) and the
    article title (underscores shown as spaces); each question becomes a QAExample whose gold passage is its
    paragraph and whose group is the article title. Errors inside a question report its 1-based position among all
    questions in the file as the line; errors above question level report no line.

    Args:
        path: the SQuAD file.

    Returns:
        (questions, passages), both in file order.

    Raises:
        DataFormatError: unreadable file or JSON, a missing or mistyped field, no answers, or a duplicate id.
    """
    doc = read_json_document(path)
    if not isinstance(doc, dict):
        raise DataFormatError(path, None, None, "expected a JSON object with a 'data' list")
    articles = json_field(path, None, doc, "data", list, "a list of articles")
    examples: list[QAExample] = []
    passages: list[Passage] = []
    seen_qids: dict[str, int] = {}
    for a, article in enumerate(articles):
        at = f"data[{a}]"  # field paths, e.g. "data[3].paragraphs[2].qas[0].answers"
        article = _object(path, None, article, at)
        title = json_field(path, None, article, "title", str, "a string", where=at, default="").replace("_", " ")
        for p, para in enumerate(json_field(path, None, article, "paragraphs", list, "a list", where=at)):
            pat = f"{at}.paragraphs[{p}]"
            para = _object(path, None, para, pat)
            context = json_field(path, None, para, "context", str, "a string", where=pat)
            qas = json_field(path, None, para, "qas", list, "a list", where=pat)
            pid = f"{a}-{p}"
            passages.append(Passage(pid=pid, text=context, title=title))
            for q, qa in enumerate(qas):
                qat = f"{pat}.qas[{q}]"
                record_no = len(examples) + 1
                qa = _object(path, record_no, qa, qat)
                qid = json_field(path, record_no, qa, "id", str, "a string", where=qat)
                if qid in seen_qids:
                    msg = f"duplicate id '{qid}' (first seen at question {seen_qids[qid]})"
                    raise DataFormatError(path, record_no, f"{qat}.id", msg)
                seen_qids[qid] = record_no
                examples.append(
                    QAExample(
                        qid=qid,
                        question=_question(path, record_no, qa, qat),
                        answers=_squad_answers(path, record_no, qa, qat),
                        gold_pids=(pid,),
                        group=title,
                        context=(title, context),
                    )
                )
    return examples, passages


def load_nq_open(path: str | Path) -> list[QAExample]:
    """Load NQ-open JSONL: `{"question": str, "answer": [str, ...]}` per line; qid is "nq-{line}".

    Raises:
        DataFormatError: a line is not a JSON object, or a field is missing, mistyped or empty.
    """
    return _nq_open_examples(path, iter_jsonl(path))


def _nq_open_examples(path: str | Path, records: Iterable[tuple[int, dict[str, Any]]]) -> list[QAExample]:
    return [
        QAExample(qid=f"nq-{line}", question=_question(path, line, rec), answers=_answers(path, line, rec, "answer"))
        for line, rec in records
    ]


def load_qa_jsonl(path: str | Path) -> list[QAExample]:
    """Load generic QA JSONL.

    Fields per line: `question` (str), `answers` (non-empty list of str), and optionally `id` (str, default
    "{file stem}-{line}"), `gold_passage_ids` (list of str/int), `group` (str, for `split_by_group`) and
    `context` ({"title": str (optional), "text": str}).

    Raises:
        DataFormatError: a line is not a JSON object, a field is missing, mistyped or empty, or an id repeats.
    """
    return _generic_examples(path, iter_jsonl(path))


def load_qa_parquet(path: str | Path) -> list[QAExample]:
    """Load QA Parquet (e.g. `datasets.Dataset.to_parquet`): the columns of generic QA JSONL (`load_qa_jsonl`), or
    NQ-open's `question` and `answer` when the first row has `answer` but no `answers`. A null cell is an absent
    field; lists and structs are read as JSON's. Reported lines are 1-based rows.

    Raises:
        DataFormatError: unreadable Parquet, or a row as `load_qa_jsonl` / `load_nq_open` refuse a line.
    """
    records = iter_parquet_records(path)
    first = next(records, None)
    if first is None:
        return []
    rows = itertools.chain([first], records)
    return _nq_open_examples(path, rows) if _is_nq_open(first[1]) else _generic_examples(path, rows)


def _is_nq_open(record: dict[str, Any]) -> bool:
    """An NQ-open record (`answer`) rather than a generic one (`answers`)."""
    return "answer" in record and "answers" not in record


def _generic_examples(path: str | Path, records: Iterable[tuple[int, dict[str, Any]]]) -> list[QAExample]:
    name = Path(path)
    stem = Path(name.stem).stem if name.suffix == ".gz" else name.stem  # "dev.jsonl.gz" -> "dev"
    examples: list[QAExample] = []
    first_line: dict[str, int] = {}
    for line, rec in records:
        qid = json_field(path, line, rec, "id", str, "a string", default=f"{stem}-{line}")
        if qid in first_line:
            raise DataFormatError(path, line, "id", f"duplicate id '{qid}' (first seen on line {first_line[qid]})")
        first_line[qid] = line
        gold = json_field(path, line, rec, "gold_passage_ids", list, "a list of ids", default=[])
        for i, pid in enumerate(gold):
            if isinstance(pid, bool) or not isinstance(pid, (str, int)):
                raise DataFormatError(path, line, f"gold_passage_ids[{i}]", "expected a string or integer id")
        context = None
        if "context" in rec:
            ctx = _object(path, line, rec["context"], "context")
            text = json_field(path, line, ctx, "text", str, "a string", where="context")
            context = (json_field(path, line, ctx, "title", str, "a string", where="context", default=""), text)
        examples.append(
            QAExample(
                qid=qid,
                question=_question(path, line, rec),
                answers=_answers(path, line, rec, "answers"),
                gold_pids=tuple(str(pid) for pid in gold),
                group=json_field(path, line, rec, "group", str, "a string", default=""),
                context=context,
            )
        )
    return examples


def load_qa(path: str | Path, fmt: Literal["squad", "nq_open", "jsonl", "parquet", "auto"] = "auto"
            ) -> list[QAExample]:
    """Load questions in any supported format (for SQuAD, only the questions; use `load_squad` for passages).

    With `fmt="auto"`, `.json`/`.zip` mean SQuAD, and `.jsonl` means NQ-open when the first record has `answer`
    but no `answers`, generic JSONL otherwise; `.parquet` holds either kind of record (`load_qa_parquet`).

    Raises:
        DataFormatError: the format cannot be inferred, the file is malformed, or it holds no question.
        ValueError: `fmt` is not one of the accepted values.
    """
    if fmt == "auto":
        ext = data_suffix(path)
        if ext in (".json", ".zip"):
            fmt = "squad"
        elif ext == ".jsonl":
            records = iter_jsonl(path)
            try:
                first = next(records, None)
            finally:
                records.close()  # release the file now rather than at garbage collection
            fmt = "nq_open" if first is not None and _is_nq_open(first[1]) else "jsonl"
        elif ext == ".parquet":
            fmt = "parquet"
        else:
            raise DataFormatError(path, None, None, f"cannot infer QA format from '{ext}'; pass fmt=")
    loaders = {"squad": lambda p: load_squad(p)[0], "nq_open": load_nq_open, "jsonl": load_qa_jsonl,
               "parquet": load_qa_parquet}
    return load_nonempty(loaders, fmt, path, "no questions: the file is empty")


def split_by_group(
    examples: Sequence[QAExample], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
    unit: Literal["groups", "questions"] = "groups",
) -> tuple[list[QAExample], list[QAExample], list[QAExample]]:
    """Split into (train, val, test) so that no group (e.g. SQuAD article) spans two splits.

    Groups, in order of first appearance, are shuffled with `random.Random(seed)` and cut in the given fractions, so
    the result depends only on the input order and the seed. Examples with an empty group are each their own group.
    Within a split, examples keep their input order.

    unit="groups" cuts by group count: with at least as many groups as positive fractions, every split with a
    positive fraction gets at least one group. unit="questions" cuts by question count, for groups of very
    different sizes (COVID-QA's articles hold 1 to 113 questions): each group, in shuffled order, goes to the split
    whose share of the questions its middle question falls in.

    Raises:
        ValueError: fractions are negative or do not sum to 1, or `unit` is unknown.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    keys = [ex.group if ex.group else ("", i) for i, ex in enumerate(examples)]  # tuple keys never clash with names
    groups = list(dict.fromkeys(keys))
    random.Random(seed).shuffle(groups)
    split_of: dict[str | tuple[str, int], int] = {}
    if unit == "questions":
        sizes = Counter(keys)
        bounds = [sum(fractions[: i + 1]) * len(keys) for i in range(3)]  # cumulative question targets
        done = 0
        for group in groups:
            middle = done + sizes[group] / 2
            split_of[group] = next((i for i in range(3) if middle < bounds[i]), 2)
            done += sizes[group]
    elif unit == "groups":
        start = 0
        for split, count in enumerate(_group_counts(len(groups), fractions)):
            split_of.update(dict.fromkeys(groups[start : start + count], split))
            start += count
    else:
        raise ValueError(f"unit is 'groups' or 'questions', got {unit!r}")
    out: tuple[list[QAExample], list[QAExample], list[QAExample]] = ([], [], [])
    for ex, key in zip(examples, keys, strict=True):
        out[split_of[key]].append(ex)
    return out


def _group_counts(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Round n * fractions to integers summing to n (largest remainder), then lift empty positive splits to one."""
    exact = [n * f for f in fractions]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(3), key=lambda i: counts[i] - exact[i])  # largest remainder first; stable on ties
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i in range(3):
        # Taking from the largest split keeps it non-empty as long as n >= number of positive fractions.
        if fractions[i] > 0 and counts[i] == 0 and max(counts) > 1:
            counts[counts.index(max(counts))] -= 1
            counts[i] = 1
    return counts


def read_json_document(path: str | Path) -> Any:
    """Parse a whole JSON file, or the single `.json` member of a zip archive."""
    path = Path(path)
    member = ""
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                members = [n for n in zf.namelist() if n.endswith(".json") and not n.startswith("__MACOSX/")]
                if len(members) != 1:
                    msg = f"zip archive holds {len(members)} .json members {members[:5]}; expected exactly one"
                    raise DataFormatError(path, None, None, msg)
                member = members[0]
                raw = zf.read(member)
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(path, None, None, "file not found") from None
    except zipfile.BadZipFile as e:
        raise DataFormatError(path, None, None, f"not a valid zip archive ({e})") from None
    except OSError as e:
        raise DataFormatError(path, None, None, f"cannot read: {e.strerror or e}") from None
    inside = f" in member '{member}'" if member else ""
    try:
        return json.loads(raw)  # bytes: json detects UTF-8/16/32 and a BOM itself
    except json.JSONDecodeError as e:
        raise DataFormatError(path, e.lineno, None, f"invalid JSON{inside}: {e.msg} (column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise DataFormatError(path, None, None, f"not valid UTF-8{inside} ({e.reason})") from None


def _object(path: str | Path, line: int | None, value: Any, where: str) -> dict[str, Any]:
    """Check that a nested JSON value is an object; `where` names it in the error."""
    if not isinstance(value, dict):
        raise DataFormatError(path, line, where, "expected a JSON object")
    return value


def _question(path: str | Path, line: int | None, record: dict[str, Any], where: str = "") -> str:
    """The non-empty `question` string of a record."""
    question = json_field(path, line, record, "question", str, "a string", where=where)
    if not question.strip():
        raise DataFormatError(path, line, f"{where}.question" if where else "question", "empty question")
    return question


def _answers(path: str | Path, line: int, record: dict[str, Any], key: str) -> tuple[str, ...]:
    """A non-empty list of answer strings, de-duplicated in order."""
    answers = json_field(path, line, record, key, list, "a non-empty list of strings")
    if not answers:
        raise DataFormatError(path, line, key, "empty list; expected at least one answer")
    for i, answer in enumerate(answers):
        if not isinstance(answer, str):
            raise DataFormatError(path, line, f"{key}[{i}]", "expected a string")
    return tuple(dict.fromkeys(answers))


def _squad_answers(path: str | Path, line: int, qa: dict[str, Any], where: str) -> tuple[str, ...]:
    """Unique answer texts, in order, from SQuAD's [{"text": ..., "answer_start": ...}, ...]."""
    answers = json_field(path, line, qa, "answers", list, "a list of answers", where=where)
    if not answers:
        # SQuAD v2 unanswerable questions land here; this loader reads v1.1, where every question has an answer.
        raise DataFormatError(path, line, f"{where}.answers", "empty list; expected at least one answer")
    texts = []
    for i, answer in enumerate(answers):
        answer = _object(path, line, answer, f"{where}.answers[{i}]")
        texts.append(json_field(path, line, answer, "text", str, "a string", where=f"{where}.answers[{i}]"))
    return tuple(dict.fromkeys(texts))
