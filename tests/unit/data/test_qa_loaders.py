"""rag_e2e.data.qa: SQuAD / NQ-open / JSONL loaders, their one-line errors, and the group-disjoint split."""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import pytest
from helpers import assert_data_error

from rag_e2e.data.qa import load_nq_open, load_qa, load_qa_jsonl, load_squad, split_by_group
from rag_e2e.data.types import Passage, QAExample
from rag_e2e.errors import DataFormatError

# tests/unit/data/<this file> -> parents[3] is the repo root; shared data sits beside it.
SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
SQUAD_DEV = SHARED_DATA / "squad-v1.1-dev" / "dev-v1.1.json.zip"
NQ_DEV = SHARED_DATA / "nq-open" / "NQ-open.dev.jsonl"

SQUAD = {
    "version": "1.1",
    "data": [
        {
            "title": "Super_Bowl_50",
            "paragraphs": [
                {
                    "context": "The Denver Broncos won Super Bowl 50.",
                    "qas": [
                        {
                            "id": "q1",
                            "question": "Who won Super Bowl 50?",
                            "answers": [
                                {"answer_start": 0, "text": "The Denver Broncos"},
                                {"answer_start": 4, "text": "Denver Broncos"},
                                {"answer_start": 4, "text": "Denver Broncos"},
                            ],
                        },
                        {"id": "q2", "question": "Which Super Bowl?", "answers": [{"answer_start": 23, "text": "50"}]},
                    ],
                },
                {
                    "context": "It was played in 2016.",
                    "qas": [{"id": "q3", "question": "When?", "answers": [{"text": "2016"}]}],
                },
            ],
        },
        {
            "title": "Warsaw",
            "paragraphs": [
                {
                    "context": "Warsaw is in Poland.",
                    "qas": [{"id": "q4", "question": "Where?", "answers": [{"text": "Poland"}]}],
                }
            ],
        },
    ],
}


def _write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- SQuAD ---------------------------------------------------------------------------------------------------------


def test_load_squad_json(tmp_path):
    examples, passages = load_squad(_write_json(tmp_path / "dev.json", SQUAD))
    assert passages == [
        Passage("0-0", "The Denver Broncos won Super Bowl 50.", "Super Bowl 50"),
        Passage("0-1", "It was played in 2016.", "Super Bowl 50"),
        Passage("1-0", "Warsaw is in Poland.", "Warsaw"),
    ]
    assert [ex.qid for ex in examples] == ["q1", "q2", "q3", "q4"]
    q1 = examples[0]
    assert q1 == QAExample(
        "q1", "Who won Super Bowl 50?", ("The Denver Broncos", "Denver Broncos"), ("0-0",), "Super Bowl 50"
    )
    assert q1.context == ("Super Bowl 50", "The Denver Broncos won Super Bowl 50.")
    assert [ex.gold_pids for ex in examples] == [("0-0",), ("0-0",), ("0-1",), ("1-0",)]
    assert [ex.group for ex in examples] == ["Super Bowl 50"] * 3 + ["Warsaw"]


def test_load_squad_zip_matches_json(tmp_path):
    with zipfile.ZipFile(tmp_path / "dev.zip", "w") as zf:
        zf.writestr("README.txt", "not data")
        zf.writestr("dev.json", json.dumps(SQUAD))
    assert load_squad(tmp_path / "dev.zip") == load_squad(_write_json(tmp_path / "dev.json", SQUAD))


@pytest.mark.parametrize(("members", "n_json"), [(["README.txt"], 0), (["a.json", "b.json"], 2)])
def test_squad_zip_needs_exactly_one_json_member(tmp_path, members, n_json):
    path = tmp_path / "dev.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name in members:
            zf.writestr(name, "{}")
    with pytest.raises(DataFormatError) as exc:
        load_squad(path)
    assert_data_error(exc, path, None, None, f"holds {n_json} .json members")


def test_squad_not_a_zip(tmp_path):
    path = tmp_path / "dev.zip"
    path.write_text("plain text")
    with pytest.raises(DataFormatError) as exc:
        load_squad(path)
    assert_data_error(exc, path, None, None, "not a valid zip archive")


def test_squad_invalid_json_reports_line(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text('{\n  "data": [\n    oops\n  ]\n}\n')
    with pytest.raises(DataFormatError) as exc:
        load_squad(path)
    assert_data_error(exc, path, 3, None, "invalid JSON: Expecting value (column 5)")


def test_squad_invalid_json_in_zip_names_member(tmp_path):
    path = tmp_path / "dev.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("inner/dev.json", '{"data": [,]}')
    with pytest.raises(DataFormatError) as exc:
        load_squad(path)
    assert_data_error(exc, path, 1, None, "invalid JSON in member 'inner/dev.json'")


def _without(doc: dict, *keys: str | int) -> dict:
    """A deep copy of `doc` with the item at the key path removed."""
    doc = copy.deepcopy(doc)
    node = doc
    for key in keys[:-1]:
        node = node[key]
    del node[keys[-1]]
    return doc


# Errors inside a question carry its 1-based position among all questions as the line; q4 is the 4th.
@pytest.mark.parametrize(
    ("keys", "line", "field"),
    [
        (("data",), None, "data"),
        (("data", 1, "paragraphs"), None, "data[1].paragraphs"),
        (("data", 1, "paragraphs", 0, "context"), None, "data[1].paragraphs[0].context"),
        (("data", 1, "paragraphs", 0, "qas"), None, "data[1].paragraphs[0].qas"),
        (("data", 1, "paragraphs", 0, "qas", 0, "id"), 4, "data[1].paragraphs[0].qas[0].id"),
        (("data", 1, "paragraphs", 0, "qas", 0, "question"), 4, "data[1].paragraphs[0].qas[0].question"),
        (("data", 1, "paragraphs", 0, "qas", 0, "answers"), 4, "data[1].paragraphs[0].qas[0].answers"),
        (
            ("data", 0, "paragraphs", 0, "qas", 1, "answers", 0, "text"),
            2,
            "data[0].paragraphs[0].qas[1].answers[0].text",
        ),
    ],
)
def test_squad_missing_field(tmp_path, keys, line, field):
    path = _write_json(tmp_path / "dev.json", _without(SQUAD, *keys))
    with pytest.raises(DataFormatError) as exc:
        load_squad(path)
    assert_data_error(exc, path, line, field, "missing; expected")


@pytest.mark.parametrize(
    ("mutate", "line", "field", "text"),
    [
        (lambda d: d.update(data={"a": 1}), None, "data", "expected a list of articles, got object"),
        (lambda d: d["data"].append("article"), None, "data[2]", "expected a JSON object"),
        (lambda d: d["data"][0].update(title=7), None, "data[0].title", "expected a string, got number"),
        (lambda d: d["data"][0]["paragraphs"][1].update(context=None), None,
         "data[0].paragraphs[1].context", "got null"),
        (lambda d: d["data"][1]["paragraphs"][0]["qas"][0].update(answers="Poland"), 4,
         "data[1].paragraphs[0].qas[0].answers", "expected a list of answers, got string"),
        (lambda d: d["data"][1]["paragraphs"][0]["qas"][0].update(answers=[]), 4,
         "data[1].paragraphs[0].qas[0].answers", "expected at least one answer"),
        (lambda d: d["data"][0]["paragraphs"][1]["qas"][0].update(question="  "), 3,
         "data[0].paragraphs[1].qas[0].question", "empty question"),
        (lambda d: d["data"][1]["paragraphs"][0]["qas"][0].update(id="q1"), 4,
         "data[1].paragraphs[0].qas[0].id", "duplicate id 'q1' (first seen at question 1)"),
    ],
)  # fmt: skip
def test_squad_wrong_types(tmp_path, mutate, line, field, text):
    doc = copy.deepcopy(SQUAD)
    mutate(doc)
    path = _write_json(tmp_path / "dev.json", doc)
    with pytest.raises(DataFormatError) as exc:
        load_squad(path)
    assert_data_error(exc, path, line, field, text)


@pytest.mark.parametrize("name", ["missing.json", "missing.zip", "missing.jsonl"])
def test_missing_file(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(DataFormatError) as exc:
        load_qa(path)
    assert_data_error(exc, path, None, None, "file not found")


# --- NQ-open and generic JSONL -------------------------------------------------------------------------------------


def test_load_nq_open_skips_blank_lines_and_keeps_physical_line_ids(tmp_path):
    path = _write_lines(
        tmp_path / "nq.jsonl",
        [
            '{"question": "who wrote hamlet", "answer": ["Shakespeare", "William Shakespeare", "Shakespeare"]}',
            "",
            '{"question": "capital of france", "answer": ["Paris"]}',
        ],
    )
    assert load_nq_open(path) == [
        QAExample("nq-1", "who wrote hamlet", ("Shakespeare", "William Shakespeare")),
        QAExample("nq-3", "capital of france", ("Paris",)),
    ]


@pytest.mark.parametrize(
    ("line2", "field", "text"),
    [
        ('{"question": "q", "answer": "Paris"}', "answer", "expected a non-empty list of strings, got string"),
        ('{"question": "q", "answer": []}', "answer", "expected at least one answer"),
        ('{"question": "q", "answer": ["Paris", 3]}', "answer[1]", "expected a string"),
        ('{"answer": ["Paris"]}', "question", "missing; expected a string"),
        ('{"question": "q", "answer": ["Paris"]', None, "invalid JSON"),
        ('["q", ["Paris"]]', None, "expected a JSON object, got list"),
    ],
)
def test_nq_open_errors(tmp_path, line2, field, text):
    path = _write_lines(tmp_path / "nq.jsonl", ['{"question": "ok", "answer": ["ok"]}', line2])
    with pytest.raises(DataFormatError) as exc:
        load_nq_open(path)
    assert_data_error(exc, path, 2, field, text)


def test_nq_open_bad_utf8_names_line(tmp_path):
    path = tmp_path / "nq.jsonl"
    path.write_bytes(b'{"question": "ok", "answer": ["ok"]}\n{"question": "\xff", "answer": ["x"]}\n')
    with pytest.raises(DataFormatError) as exc:
        load_nq_open(path)
    assert_data_error(exc, path, 2, None, "not valid UTF-8")


def test_load_qa_jsonl(tmp_path):
    path = _write_lines(
        tmp_path / "mine.jsonl",
        [
            '{"id": "a", "question": "q1", "answers": ["x"], "gold_passage_ids": [12, "p7"], "group": "g",'
            ' "context": {"title": "T", "text": "x is here"}}',
            "",
            '{"question": "q2", "answers": ["y", "z"], "context": {"text": "untitled"}}',
        ],
    )
    first, second = load_qa_jsonl(path)
    assert first == QAExample("a", "q1", ("x",), ("12", "p7"), "g")
    assert first.context == ("T", "x is here")
    assert second == QAExample("mine-3", "q2", ("y", "z"))
    assert second.context == ("", "untitled")


@pytest.mark.parametrize(
    ("line2", "field", "text"),
    [
        ('{"question": "q", "answers": []}', "answers", "expected at least one answer"),
        ('{"question": "q"}', "answers", "missing; expected a non-empty list of strings"),
        ('{"question": "q", "answers": ["x"], "id": 5}', "id", "expected a string, got number"),
        ('{"question": "q", "answers": ["x"], "id": "a"}', "id", "duplicate id 'a' (first seen on line 1)"),
        ('{"question": "q", "answers": ["x"], "gold_passage_ids": "p1"}', "gold_passage_ids", "got string"),
        ('{"question": "q", "answers": ["x"], "gold_passage_ids": [true]}', "gold_passage_ids[0]", "integer id"),
        ('{"question": "q", "answers": ["x"], "context": "text"}', "context", "expected a JSON object"),
        ('{"question": "q", "answers": ["x"], "context": {"title": "t"}}', "context.text", "missing"),
    ],
)
def test_qa_jsonl_errors(tmp_path, line2, field, text):
    path = _write_lines(tmp_path / "mine.jsonl", ['{"id": "a", "question": "ok", "answers": ["ok"]}', line2])
    with pytest.raises(DataFormatError) as exc:
        load_qa_jsonl(path)
    assert_data_error(exc, path, 2, field, text)


def test_load_qa_dispatch(tmp_path):
    squad = _write_json(tmp_path / "dev.json", SQUAD)
    assert load_qa(squad) == load_squad(squad)[0]
    nq = _write_lines(tmp_path / "nq.jsonl", ["", '{"question": "q", "answer": ["a"]}'])
    assert load_qa(nq) == [QAExample("nq-2", "q", ("a",))]
    generic = _write_lines(tmp_path / "g.jsonl", ['{"question": "q", "answers": ["a"]}'])
    assert load_qa(generic) == [QAExample("g-1", "q", ("a",))]


def test_load_qa_forced_format_error_and_bad_arguments(tmp_path):
    nq = _write_lines(tmp_path / "nq.jsonl", ['{"question": "q", "answer": ["a"]}'])
    with pytest.raises(DataFormatError) as exc:
        load_qa(nq, fmt="jsonl")
    assert_data_error(exc, nq, 1, "answers", "missing")
    odd = tmp_path / "data.csv"
    odd.write_text("q,a\n")
    with pytest.raises(DataFormatError) as exc:
        load_qa(odd)
    assert_data_error(exc, odd, None, None, "cannot infer QA format from '.csv'")
    with pytest.raises(ValueError, match="fmt must be"):
        load_qa(nq, fmt="csv")  # type: ignore[arg-type]


# --- split_by_group ------------------------------------------------------------------------------------------------


def _examples(groups: list[str]) -> list[QAExample]:
    return [QAExample(f"q{i}", f"question {i}", ("a",), group=g) for i, g in enumerate(groups)]


def test_split_by_group_keeps_groups_whole_and_is_deterministic():
    examples = _examples([f"g{i % 10}" for i in range(100)])
    train, val, test = split_by_group(examples, seed=3)
    assert split_by_group(examples, seed=3) == (train, val, test)
    assert split_by_group(examples, seed=4) != (train, val, test)
    groups = [{ex.group for ex in split} for split in (train, val, test)]
    assert [len(g) for g in groups] == [8, 1, 1]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sorted(train + val + test, key=lambda ex: int(ex.qid[1:])) == examples
    assert train == [ex for ex in examples if ex.group in groups[0]]  # input order kept within a split


def test_split_by_group_three_groups_fill_every_split():
    for seed in range(5):
        assert all(split_by_group(_examples(["a", "b", "c", "a"]), seed=seed))


def test_split_by_group_empty_group_is_a_singleton():
    train, val, test = split_by_group(_examples([""] * 20), fractions=(0.5, 0.25, 0.25))
    assert (len(train), len(val), len(test)) == (10, 5, 5)


def test_split_by_group_zero_fraction_and_bad_fractions():
    assert split_by_group(_examples(["a", "b", "c"]), fractions=(1.0, 0.0, 0.0))[1:] == ([], [])
    with pytest.raises(ValueError, match="summing to 1"):
        split_by_group(_examples(["a"]), fractions=(0.5, 0.2, 0.2))


# --- real data (skipped when the shared files are absent) ----------------------------------------------------------


def test_real_squad_dev():
    if not SQUAD_DEV.is_file():
        pytest.skip(f"{SQUAD_DEV} not present")
    examples, passages = load_squad(SQUAD_DEV)
    assert len({p.pid.split("-")[0] for p in passages}) == 48
    assert (len(passages), len(examples)) == (2067, 10570)
    pids = {p.pid for p in passages}
    assert len(pids) == len(passages) and all(ex.gold_pids[0] in pids for ex in examples)
    assert len({ex.qid for ex in examples}) == len(examples)
    train, val, test = split_by_group(examples, seed=0)
    groups = [{ex.group for ex in split} for split in (train, val, test)]
    assert all(groups) and sum(map(len, groups)) == len(set().union(*groups)) == 48
    assert split_by_group(examples, seed=0) == (train, val, test)


def test_real_nq_open_dev():
    if not NQ_DEV.is_file():
        pytest.skip(f"{NQ_DEV} not present")
    examples = load_qa(NQ_DEV)
    assert len(examples) == 3610
    assert examples[0] == QAExample(
        "nq-1", "when was the last time anyone was on the moon", ("14 December 1972 UTC", "December 1972")
    )
