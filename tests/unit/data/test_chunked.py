"""SQuAD-layout articles cut into word chunks: passages, gold marking by answer start, bad input, the COVID-QA
split (skipped without the shared file)."""

import json

import pytest
from helpers import SHARED_DATA

from rag_e2e.compose import compose
from rag_e2e.data.chunked import load_squad_chunked
from rag_e2e.data.qa import split_by_group
from rag_e2e.data.sources import load_data
from rag_e2e.errors import ConfigError, DataFormatError

COVID_QA = SHARED_DATA / "covid-qa" / "covid-qa-public.json"


def _write(tmp_path, articles):
    path = tmp_path / "qa.json"
    path.write_text(json.dumps({"version": "1", "data": articles}))
    return path


def _article(context, qas, title=None):
    article = {"paragraphs": [{"context": context, "qas": qas}]}
    if title is not None:
        article["title"] = title
    return article


def _qa(qid, question, text, start):
    return {"id": qid, "question": question, "answers": [{"text": text, "answer_start": start}]}


def test_chunks_hold_their_words_and_gold_is_the_chunk_of_the_answers_start(tmp_path):
    words = [f"w{i}" for i in range(10)]
    context = "A Title Line\n" + "  ".join(words)  # double spaces: offsets must come from the text, not a re-join
    start_w5 = context.index("w5")
    start_w3 = context.index("w3")
    qas = [_qa(7, "where is w5?", "w5  w6", start_w5),  # integer id, as COVID-QA's
           _qa("b", "what spans chunks?", "w3  w4", start_w3),  # starts in chunk 0, ends in chunk 1
           _qa("c", "off by one?", " w8", start_w5 + 100)]  # wrong start: found by its text
    # Chunks count the title line's words too: [A Title Line w0] [w1 w2 w3 w4] [w5 w6 w7 w8] [w9]
    examples, passages = load_squad_chunked(_write(tmp_path, [_article(context, qas)]), chunk_words=4)
    assert [p.pid for p in passages] == ["0-0-0", "0-0-1", "0-0-2", "0-0-3"]
    assert [p.text for p in passages] == ["A Title Line w0", "w1 w2 w3 w4", "w5 w6 w7 w8", "w9"]
    assert all(p.title == "A Title Line" for p in passages)  # no title field: the first line
    by_id = {ex.qid: ex for ex in examples}
    assert by_id["7"].gold_pids == ("0-0-2",)
    assert by_id["b"].gold_pids == ("0-0-1",) and by_id["b"].answers == ("w3 w4",)  # whitespace normalised
    assert by_id["c"].gold_pids == ("0-0-2",) and by_id["c"].answers == ("w8",)
    assert {ex.group for ex in examples} == {"A Title Line"}


def test_a_title_field_names_the_passages_and_the_group(tmp_path):
    path = _write(tmp_path, [_article("one two three", [_qa("q", "which?", "two", 4)], title="Some_Article")])
    examples, passages = load_squad_chunked(path, chunk_words=100)
    assert passages[0].title == "Some Article" and examples[0].group == "Some Article"


@pytest.mark.parametrize(("article", "field", "text"), [
    (_article("alpha beta gamma", [_qa(12, "q?", "delta", 0)], title="T"), "data[0].paragraphs[0].qas[0].answers[0]",
     "article 'T', question id 12: the answer 'delta' is not in the article's text"),
    (_article("   \n ", [_qa(13, "q?", "x", 0)], title="Empty"), "data[0].paragraphs[0].context",
     "article 'Empty' has no text (question id 13)"),
    ({"title": "Nothing", "paragraphs": []}, "data[0].paragraphs", "article 'Nothing' is empty"),
    (_article("alpha", [{"id": 14, "question": "q?", "answers": []}], title="T"),
     "data[0].paragraphs[0].qas[0].answers", "article 'T', question id 14: no answer span"),
])
def test_bad_articles_get_one_line_naming_the_article_and_question(tmp_path, article, field, text):
    path = _write(tmp_path, [article])
    with pytest.raises(DataFormatError) as exc:
        load_squad_chunked(path, chunk_words=100)
    assert exc.value.field == field and text in str(exc.value) and str(path) in str(exc.value)
    assert "\n" not in str(exc.value)


def test_split_by_question_count_keeps_groups_whole_and_near_the_fractions():
    from rag_e2e.data.types import QAExample

    sizes = [113, 1, 40, 7, 7, 60, 2, 30, 12, 9, 50, 25, 3, 18, 44]  # groups of very different sizes
    examples = [QAExample(qid=f"{g}-{i}", question="q", answers=("a",), group=f"g{g}")
                for g, n in enumerate(sizes) for i in range(n)]
    for seed in range(5):
        splits = split_by_group(examples, (0.5, 0.2, 0.3), seed=seed, unit="questions")
        groups = [{ex.group for ex in split} for split in splits]
        assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
        assert sum(map(len, splits)) == len(examples)
        # Each cut lands within half a group of its target (the middle-question rule), the largest group 113.
        total = len(examples)
        assert abs(len(splits[0]) - 0.5 * total) <= 113 / 2 + 1
        assert abs(len(splits[0]) + len(splits[1]) - 0.7 * total) <= 113 / 2 + 1


def test_chunk_words_is_for_squad_layout_files():
    with pytest.raises(ConfigError, match="data.chunk_words"):
        compose(["data=synthetic", "data.chunk_words=100"])
    with pytest.raises(ConfigError, match="data.split_unit"):
        compose(["data=covidqa", "data.split_unit=words"])


@pytest.mark.skipif(not COVID_QA.is_file(), reason="COVID-QA's public half is not in ../shared/data")
def test_covidqa_config_splits_by_article_with_every_answer_in_its_gold_passage():
    cfg = compose(["data=covidqa"])
    data = load_data(cfg.data)
    assert len(data.corpus) > 1000 and len(data.train) + len(data.dev) + len(data.test) == 841
    assert len(data.test) >= 200  # generation metrics need at least 200 test questions
    groups = [{ex.group for ex in split} for split in (data.train, data.dev, data.test)]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sum(map(len, groups)) == 49
    text = {p.pid: p.text for p in data.corpus}
    for ex in data.train + data.dev + data.test:
        # The gold passage holds the answer's first word (the answer may run on into the next passage).
        assert any(ex.answers[0].split()[0] in text[pid] for pid in ex.gold_pids), ex.qid


@pytest.mark.skipif(not COVID_QA.is_file(), reason="COVID-QA's public half is not in ../shared/data")
def test_another_squad_layout_file_runs_with_one_override(tmp_path):
    doc = json.loads(COVID_QA.read_text())
    doc["data"] = doc["data"][:6]  # a smaller file of the same layout
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(doc))
    data = load_data(compose(["data=covidqa", f"data.qa_path={path}"]).data)
    assert 0 < len(data.corpus) < 500 and data.corpus_source == str(path)
