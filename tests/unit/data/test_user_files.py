"""A user's own QA and corpus files as HF `datasets` writes them (JSON lines, Parquet) load as our own formats do."""

import json
import random

import pytest

from rag_e2e.data.corpus import load_corpus
from rag_e2e.data.qa import load_qa
from rag_e2e.errors import DataFormatError

datasets = pytest.importorskip("datasets", reason="the [data] extra")


def _qa_rows(rng: random.Random, n: int) -> list[dict]:
    words = ["alpha", "βeta", "naïve", "tab\there", 'quote"d']
    rows = []
    for i in range(n):
        rows.append({
            "id": f"q{i}",
            "question": " ".join(rng.choices(words, k=rng.randint(1, 6))) + "?",
            "answers": rng.sample(words, rng.randint(1, 3)),
            "gold_passage_ids": [f"p{rng.randrange(50)}" for _ in range(rng.randint(0, 2))],
            "group": rng.choice(["a", "b"]),
            "context": {"title": rng.choice(words), "text": " ".join(rng.choices(words, k=8))},
        })  # fmt: skip
    return rows


def test_generic_qa_from_datasets_parquet_and_json_equal_our_jsonl(tmp_path):
    rows = _qa_rows(random.Random(), 30)
    ours = tmp_path / "ours.jsonl"
    ours.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    table = datasets.Dataset.from_list(rows)
    table.to_parquet(str(tmp_path / "qa.parquet"))
    table.to_json(str(tmp_path / "qa.jsonl"), lines=True, force_ascii=False)
    want = load_qa(ours)
    assert len(want) == 30 and want[0].context is not None and want[0].qid == "q0"
    assert load_qa(tmp_path / "qa.parquet") == want
    assert load_qa(tmp_path / "qa.jsonl") == want


def test_nq_style_parquet_and_null_optional_cells(tmp_path):
    datasets.Dataset.from_list([{"question": "who?", "answer": ["me", "you"]}, {"question": "what?", "answer": ["x"]}]
                               ).to_parquet(str(tmp_path / "nq.parquet"))  # fmt: skip
    got = load_qa(tmp_path / "nq.parquet")
    assert [(e.qid, e.question, e.answers) for e in got] == [("nq-1", "who?", ("me", "you")), ("nq-2", "what?", ("x",))]
    # a null optional cell is an absent field: the default id and no gold ids
    datasets.Dataset.from_list([{"id": "a", "question": "q1", "answers": ["x"], "gold_passage_ids": ["p1"]},
                                {"id": None, "question": "q2", "answers": ["y"], "gold_passage_ids": None}]
                               ).to_parquet(str(tmp_path / "dev.parquet"))  # fmt: skip
    got = load_qa(tmp_path / "dev.parquet")
    assert [(e.qid, e.gold_pids) for e in got] == [("a", ("p1",)), ("dev-2", ())]


@pytest.mark.parametrize("rows,field,row", [
    ([{"question": "ok?", "answers": ["a"]}, {"question": None, "answers": ["b"]}], "question", 2),  # null: missing
    ([{"question": "ok?", "answers": ["a"]}, {"question": "bad?", "answers": []}], "answers", 2),
    ([{"question": 3, "answers": ["a"]}], "question", 1),  # an integer column
], ids=["null-question", "empty-answers", "int-question"])
def test_a_bad_parquet_row_is_named_by_file_row_and_field(tmp_path, rows, field, row):
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "bad.parquet"))
    with pytest.raises(DataFormatError) as err:
        load_qa(tmp_path / "bad.parquet")
    assert (err.value.path, err.value.line, err.value.field) == (str(tmp_path / "bad.parquet"), row, field)


def test_not_parquet_is_one_clear_error(tmp_path):
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(DataFormatError, match="not a readable Parquet file"):
        load_qa(tmp_path / "x.parquet")


def test_corpus_from_datasets_parquet_and_json_equal_our_jsonl(tmp_path):
    rng = random.Random()
    titles = ["", "T1", "Τίτλος"]
    rows = [{"id": f"p{i}", "title": rng.choice(titles), "text": f"passage {i} " + "w " * rng.randint(1, 9)}
            for i in range(40)]  # fmt: skip
    (tmp_path / "ours.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = datasets.Dataset.from_list(rows)
    table.to_parquet(str(tmp_path / "corpus.parquet"))
    table.to_json(str(tmp_path / "corpus.jsonl"), lines=True)
    want = load_corpus(tmp_path / "ours.jsonl")
    assert len(want) == 40
    assert load_corpus(tmp_path / "corpus.parquet") == want == load_corpus(tmp_path / "corpus.jsonl")
