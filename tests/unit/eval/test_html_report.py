"""rag_e2e.eval.html_report on a fake run directory: one block per question, verdicts, gold marks, bad input, CLI."""

from __future__ import annotations

import json
import random
import re
import string
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from helpers import assert_data_error

from rag_e2e.errors import DataFormatError
from rag_e2e.eval.html_report import write_html_report

K = 5
ATTRIBUTES = {"town": "where was {} born?", "pet": "what is the name of the pet of {}?",
              "company": "which company does {} work for?"}
SCRIPT_QUESTION = 'where was <script>alert("x")</script> & "Ann" born?'


def _word(rng: random.Random) -> str:
    return "".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 3))).title()


def make_fake_run(root: Path, rng: random.Random, n_questions: int = 14, name: str = "fake_rag", seed: int = 0
                  ) -> tuple[Path, list[dict]]:
    """A run directory as `rag-e2e train` leaves it, over a JSON-lines corpus it names in config.yaml.

    Returns:
        The run directory and its prediction records (predictions.jsonl, in order).
    """
    run_dir = root / f"{name}-seed{seed}"
    (run_dir / "csv").mkdir(parents=True)
    passages = []
    for e in range(3 * n_questions):
        person = f"{_word(rng)} {_word(rng)}"
        for attribute in ATTRIBUTES:
            value = f"{_word(rng)} {_word(rng)}"
            passages.append({"id": f"e{e}-{attribute}", "title": person, "value": value, "person": person,
                             "attribute": attribute, "text": f"{value} is the {attribute} of {person}. "
                             f"{rng.choice(['Fishing boats leave before sunrise.', 'Trade grew for years.'])}"})
    corpus = run_dir.parent / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({k: p[k] for k in ("id", "title", "text")}) + "\n" for p in passages))
    records = [_record(rng, gold, passages) for gold in rng.sample(passages, n_questions)]
    records[1]["question"] = SCRIPT_QUESTION
    config = {"name": name, "trainer": {"seed": seed}, "retriever": {"k": K},
              "data": {"source": "files", "corpus_path": str(corpus), "qa_path": str(run_dir.parent / "qa.jsonl")}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    ranks = [r["gold_rank"] for r in records]
    metrics = {"test/em": sum(_em(r["answer"], r["gold"][0]) for r in records) / n_questions, "init/em": 0.0,
               **{f"test/recall@{k}": sum(r is not None and r <= k for r in ranks) / n_questions for k in (1, 5, 10)},
               **{f"init/recall@{k}": rng.uniform(0, 0.1) * k for k in (1, 5, 10)}}
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "time/total_s": 12.5}))
    rows = ["epoch,step,train/loss,val/em,val/recall@5"]
    rows += [f"0,{step},,{step / 100},{step / 80}" for step in (10, 20, 40, 60)]
    (run_dir / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    return run_dir, records


def _record(rng: random.Random, gold: dict, passages: list[dict]) -> dict:
    """A predictions.jsonl record: the gold passage at a random rank of the top K (or beyond, or not found)."""
    others = [p["id"] for p in rng.sample(passages, K + 1) if p["id"] != gold["id"]][:K]
    rank = rng.choice([1, 1, 2, 4, K + 2, None])
    retrieved = others[:]
    if rank is not None and rank <= K:
        retrieved[rank - 1] = gold["id"]
    answer = rng.choice([gold["value"], f"the {gold['value'].lower()}!", rng.choice(passages)["value"]])
    scores = sorted((round(rng.uniform(10, 16), 4) for _ in retrieved), reverse=True)
    return {"qid": gold["id"], "question": ATTRIBUTES[gold["attribute"]].format(gold["person"]), "answer": answer,
            "gold": [gold["value"]], "gold_pids": [gold["id"]], "gold_rank": rank, "retrieved": retrieved,
            "scores": scores}


def _em(prediction: str, gold: str) -> int:
    """SQuAD exact match, written out here apart from rag_e2e.eval.metrics."""
    def norm(s: str) -> str:
        s = "".join(ch for ch in s.lower() if ch not in string.punctuation)
        return " ".join(w for w in s.split() if w not in ("a", "an", "the"))
    return int(norm(prediction) == norm(gold))


class _Page(HTMLParser):
    """Question blocks (attributes, question text, verdicts, passages), inputs and script tags of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.blocks: list[dict] = []
        self.inputs: list[dict] = []
        self.scripts = 0
        self._capture: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "section" and "q" in classes:
            self.blocks.append({**attrs, "question": "", "verdicts": [], "passages": [], "titles": []})
        elif tag == "li" and "passage" in classes:
            self.blocks[-1]["passages"].append(attrs)
        elif tag == "input":
            self.inputs.append(attrs)
        elif tag == "script":
            self.scripts += 1
        elif tag == "span" and {"question", "verdict", "ptitle"} & set(classes):
            self._capture = next(c for c in ("question", "verdict", "ptitle") if c in classes)

    def handle_endtag(self, tag):
        if tag == "span":
            self._capture = None

    def handle_data(self, data):
        if self._capture == "question":
            self.blocks[-1]["question"] += data
        elif self._capture == "verdict":
            self.blocks[-1]["verdicts"].append(data)
        elif self._capture == "ptitle":
            self.blocks[-1]["titles"].append(data)


@pytest.fixture
def fake_run(tmp_path) -> tuple[Path, list[dict]]:
    return make_fake_run(tmp_path / "runs", random.Random(7))


def test_page_has_one_block_per_question_with_verdicts_and_gold_marks(fake_run):
    run_dir, records = fake_run
    page = write_html_report(run_dir)
    assert page == run_dir / "report.html"
    parsed = _Page(page.read_text())
    assert len(parsed.blocks) == len(records)
    titles = {json.loads(line)["id"]: json.loads(line)["title"]
              for line in (run_dir.parent / "corpus.jsonl").read_text().splitlines()}
    for block, record in zip(parsed.blocks, records):
        correct = _em(record["answer"], record["gold"][0])
        hit = int(record["gold_rank"] is not None and record["gold_rank"] <= K)
        assert (block["data-qid"], block["question"]) == (record["qid"], record["question"])
        assert (block["data-correct"], block["data-hit"]) == (str(correct), str(hit))
        assert block["verdicts"] == [("correct" if correct else "wrong"), ("hit" if hit else "miss")]
        assert [p["data-pid"] for p in block["passages"]] == record["retrieved"]
        marked = ["gold" in p["class"].split() for p in block["passages"]]
        assert marked == [pid in record["gold_pids"] for pid in record["retrieved"]]
        assert block["titles"] == [titles[pid] for pid in record["retrieved"]]
    # Both verdicts occur, so the checks above saw each case.
    assert {b["data-correct"] for b in parsed.blocks} == {"0", "1"} and {b["data-hit"] for b in parsed.blocks} == {
        "0", "1"}
    assert not list(run_dir.glob(".*.tmp"))


def test_metrics_table_and_plots(fake_run):
    run_dir, records = fake_run
    text = write_html_report(run_dir).read_text()
    em = 100 * sum(_em(r["answer"], r["gold"][0]) for r in records) / len(records)
    # Recomputed from predictions.jsonl, beside metrics.json's test/ (equal here) and init/ values.
    cells = "".join(f'<td class="num">{value}</td>' for value in (f"{em:.1f}", f"{em:.1f}", "0.0"))
    assert f"<tr><th>EM</th>{cells}</tr>" in text
    for metric in ("F1", "ROUGE-L", "BLEU", "recall@1", "recall@5", "recall@10", "MRR"):
        assert f"<tr><th>{metric}</th>" in text
    assert text.count("<svg ") == 3  # F1 histogram, gold-rank histogram, val curves
    assert "val/recall@5" in text and "val/em" in text


def test_text_is_escaped_and_filters_exist(fake_run):
    run_dir, _ = fake_run
    text = write_html_report(run_dir).read_text()
    parsed = _Page(text)
    assert parsed.blocks[1]["question"] == SCRIPT_QUESTION  # the parser unescapes what the page escaped
    assert "<script>alert" not in text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp;" in text
    assert parsed.scripts == 1  # the page's own filter script only
    assert {i["id"] for i in parsed.inputs if i.get("type") == "checkbox"} == {"only-wrong", "only-miss"}
    assert "only wrong answers" in text and "only retrieval misses" in text
    assert not re.search(r"<(link|img|iframe)|src=|https?://(?!www\.w3\.org/2000/svg)", text)  # nothing to fetch


def test_gold_by_answer_match_without_gold_ids(fake_run, tmp_path):
    run_dir, records = fake_run
    record = next(r for r in records if r["gold_rank"] == 2)
    (run_dir / "predictions.jsonl").write_text(json.dumps({**record, "gold_pids": []}) + "\n")
    block = _Page(write_html_report(run_dir).read_text()).blocks[0]
    assert ["gold" in p["class"].split() for p in block["passages"]] == [False, True, False, False, False]


@pytest.mark.parametrize(
    ("line", "broken", "field", "message"),
    [
        (3, "{not json", None, "invalid JSON"),
        (2, {"drop": "scores"}, "scores", "missing"),
        (4, {"gold_rank": "1"}, "gold_rank", "expected a positive integer or null"),
        (2, {"retrieved": ["a", 3, "b", "c", "d"]}, "retrieved", "list of strings"),
        (5, {"scores": [1.0]}, "scores", "1 scores for 5 retrieved passages"),
        (1, {"gold": []}, "gold", "no reference answer"),
    ],
)
def test_malformed_predictions_name_file_line_field(fake_run, line, broken, field, message):
    run_dir, records = fake_run
    (run_dir / "report.html").write_text("previous page")
    lines = [json.dumps(r) for r in records]
    if isinstance(broken, str):
        lines[line - 1] = broken
    else:
        record = {k: v for k, v in records[line - 1].items() if k != broken.get("drop")}
        lines[line - 1] = json.dumps({**record, **{k: v for k, v in broken.items() if k != "drop"}})
    path = run_dir / "predictions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as exc:
        write_html_report(run_dir)
    assert_data_error(exc, path, line, field, message)
    assert (run_dir / "report.html").read_text() == "previous page"  # never a half-written page
    assert not list(run_dir.glob(".*.tmp"))


def test_missing_or_empty_predictions(fake_run):
    run_dir, _ = fake_run
    path = run_dir / "predictions.jsonl"
    path.write_text("\n")
    with pytest.raises(DataFormatError) as exc:
        write_html_report(run_dir)
    assert_data_error(exc, path, None, None, "no predictions")
    path.unlink()
    with pytest.raises(DataFormatError) as exc:
        write_html_report(run_dir)
    assert_data_error(exc, path, None, None, "file not found")
    assert not (run_dir / "report.html").exists()


def test_corpus_that_cannot_be_loaded_leaves_ids_and_says_why(fake_run, capsys):
    run_dir, records = fake_run
    (run_dir.parent / "corpus.jsonl").unlink()
    text = write_html_report(run_dir, run_dir / "elsewhere" / "page.html").read_text()
    assert "corpus.jsonl" in capsys.readouterr().err
    parsed = _Page(text)
    assert len(parsed.blocks) == len(records) and not any(b["titles"] for b in parsed.blocks)
    assert "Passage titles and texts left out" in text and 'class="ptext"' not in text


def test_cli_report_html(tmp_path, capsys, monkeypatch):
    from rag_e2e.cli import main

    monkeypatch.chdir(tmp_path)  # where the tables' default out=report would go
    rng = random.Random(3)
    root = tmp_path / "runs"
    (run_a, _), (run_b, _) = (make_fake_run(root / "a", rng, 4, seed=0), make_fake_run(root / "b", rng, 4, seed=1))
    make_fake_run(root / "c", rng, 4, name="other")
    assert main(["report", "--html", str(root), f"out={tmp_path / 'pages'}"]) == 0
    assert sorted(p.name for p in (tmp_path / "pages").iterdir()) == [
        "fake_rag-seed0.html", "fake_rag-seed1.html", "other.html"]  # runs sharing a label are told apart by seed
    assert capsys.readouterr().out.count("wrote ") == 3
    assert main(["report", str(run_a), "--html"]) == 0
    assert capsys.readouterr().out == f"wrote {run_a / 'report.html'}\n"
    assert not (run_b / "report.html").exists() and not (tmp_path / "report").exists()
