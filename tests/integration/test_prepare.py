"""rag-e2e prepare on a folder of raw files made here, then prepare -> train (tiny) -> export -> ask == serve."""

import json
import random

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from helpers import tiny_config
from raw_docs import fact, html_page, pdf_bytes, write

from rag_e2e import cli
from rag_e2e.config import PrepareConfig
from rag_e2e.data.corpus import load_corpus
from rag_e2e.errors import DataFormatError
from rag_e2e.inference.pipeline import RagPipeline
from rag_e2e.inference.serve import create_app
from rag_e2e.prepare import pipeline as prep
from rag_e2e.retrieval.encoders import load_tokenizer
from rag_e2e.train import train

CHUNK, OVERLAP = 24, 6
NAV = ["Home", "Products", "Newsletter signup", "Contact us"]
FOOTER = "Copyright 2026 Example Org. All rights reserved."


def _raw_folder(root, rng):
    """Every kind of input the acceptance names; returns the facts each document must keep."""
    facts = {key: [fact(rng) for _ in range(n)] for key, n in
             (("page", 4), ("report", 6), ("notes", 5), ("latin", 2), ("records", 2))}
    docs = root / "docs"
    write(docs / "web" / "page.html", html_page("Glacier Survey", [" ".join(facts["page"][:2]),
                                                                   " ".join(facts["page"][2:])], NAV, FOOTER))
    # Two pages, each with a running header and a page number, and a word hyphenated across a line end.
    pages = [["Field Report - Confidential", *facts["report"][:3], "The survey team used engi-", "neering tools.", "1"],
             ["Field Report - Confidential", *facts["report"][3:], "2"]]
    write(docs / "report.pdf", pdf_bytes(pages, title="Field Report"))
    notes = ("# Station Notes\n\n" + " ".join(facts["notes"][:3]) + "\n\n## Later\n\n- "
             + "\n- ".join(facts["notes"][3:]))
    write(docs / "notes.md", notes)
    write(docs / "notes_copy.md", notes.replace("Station Notes", "Station Notes (copy)"))  # a near duplicate
    write(docs / "notes_exact.md", notes)  # an exact duplicate
    write(docs / "latin.txt", "Caf\u00e9 log: " + " ".join(facts["latin"]), encoding="cp1252")  # not UTF-8
    write(docs / "records.jsonl", "".join(json.dumps({"id": i, "title": f"Record {i}", "text": t}) + "\n"
                                          for i, t in enumerate(facts["records"])))
    write(docs / "broken.pdf", pdf_bytes(pages)[:200])  # truncated: damaged
    write(docs / "ignored.csv", "a,b\n")  # not a supported type: not an input
    return docs, facts


def _passages(out):
    return pq.read_table(out / "passages.parquet").to_pylist()


def test_prepare_cleans_dedupes_chunks_and_resumes(tmp_path, capsys):
    docs, facts = _raw_folder(tmp_path, random.Random(7))
    out = tmp_path / "kb"
    args = ["prepare", str(docs), f"out={out}", f"chunk_tokens={CHUNK}", f"overlap={OVERLAP}", "progress=false"]
    assert cli.main(args) == 0
    printed = capsys.readouterr()
    err = printed.err
    assert "skipped" in err and "broken.pdf" in err  # the damaged file, by name
    stats = json.loads((out / "stats.json").read_text())
    assert stats["files"]["found"] == 8 and stats["files"]["done"] == 7
    assert [s["file"].endswith("broken.pdf") for s in stats["files"]["skipped"]] == [True]
    assert stats["duplicates"] == {"exact": 1, "near": 1}
    assert stats["documents"] == 8 and stats["documents_kept"] == 6  # jsonl gives two documents

    rows = _passages(out)
    assert stats["passages"] == len(rows) and len({r["id"] for r in rows}) == len(rows)
    tokenizer = load_tokenizer("minilm")
    for r in rows:  # the bound, counted independently of the chunker
        assert r["n_tokens"] == len(tokenizer(r["text"], add_special_tokens=False)["input_ids"]) <= CHUNK
    by_doc = {}
    for r in rows:
        by_doc.setdefault(r["doc_id"], []).append(r)
    assert set(by_doc) == {"docs/web/page.html", "docs/report.pdf", "docs/notes.md", "docs/latin.txt",
                           "docs/records.jsonl:0", "docs/records.jsonl:1"}
    titles = {d: {r["title"] for r in rs} for d, rs in by_doc.items()}
    assert titles["docs/web/page.html"] == {"Glacier Survey"} and titles["docs/report.pdf"] == {"Field Report"}
    assert titles["docs/notes.md"] == {"Station Notes"} and titles["docs/records.jsonl:1"] == {"Record 1"}
    text = {d: " ".join(r["text"] for r in rs) for d, rs in by_doc.items()}
    for key, doc in (("page", "docs/web/page.html"), ("report", "docs/report.pdf"), ("notes", "docs/notes.md")):
        for sentence in facts[key]:
            assert sentence in text[doc]
    assert "Café log" in text["docs/latin.txt"]
    assert "engineering tools" in text["docs/report.pdf"]
    everything = " ".join(text.values())
    for boilerplate in [*NAV, "cookies", "Copyright", "Privacy policy", "Confidential"]:
        assert boilerplate not in everything
    assert load_corpus(out / "passages.parquet")[0].pid == rows[0]["id"]  # the training loader reads it
    # Loaded as a Parquet dataset, the folder holds each passage once: the per-file shards are hidden from it.
    assert pads.dataset(out, format="parquet", exclude_invalid_files=True).count_rows() == len(rows)
    assert (out / ".shards").is_dir() and not (out / "shards").exists()
    assert f"{out / '.shards'} (hidden" in printed.out

    # A second run redoes nothing: no file is extracted again, and the corpus is the same.
    calls = []
    original = prep.extract_file
    prep.extract_file = lambda path, key: calls.append(key) or original(path, key)
    try:
        assert cli.main(args) == 0
    finally:
        prep.extract_file = original
    assert calls == [] and _passages(out) == rows
    assert json.loads((out / "stats.json").read_text())["files"]["resumed"] == 8
    # A changed file is redone, alone.
    write(docs / "latin.txt", "Caf\u00e9 log: " + fact(random.Random(1)), encoding="cp1252")
    prep.extract_file = lambda path, key: calls.append(key) or original(path, key)
    try:
        assert cli.main(args) == 0
    finally:
        prep.extract_file = original
    assert calls == ["docs/latin.txt"]
    # A folder prepared before the shards were hidden: its visible shards/ is adopted, not redone.
    (out / ".shards").rename(out / "shards")
    calls.clear()
    prep.extract_file = lambda path, key: calls.append(key) or original(path, key)
    try:
        assert cli.main(args) == 0
    finally:
        prep.extract_file = original
    assert calls == [] and (out / ".shards").is_dir() and not (out / "shards").exists()


def test_prepare_strict_fails_on_the_damaged_file_and_other_settings_are_refused(tmp_path, capsys):
    docs, _ = _raw_folder(tmp_path, random.Random(3))
    with pytest.raises(DataFormatError, match="broken.pdf"):
        prep.prepare([docs], PrepareConfig(out=str(tmp_path / "kb"), strict=True, progress=False))
    assert not (tmp_path / "kb" / "passages.parquet").exists()
    (docs / "broken.pdf").unlink()
    prep.prepare([docs], PrepareConfig(out=str(tmp_path / "kb"), progress=False))
    assert cli.main(["prepare", str(docs), f"out={tmp_path / 'kb'}", "chunk_tokens=50", "progress=false"]) == 2
    assert "chunk_tokens=100 (now 50)" in capsys.readouterr().err
    assert cli.main(["prepare", str(docs), f"out={tmp_path / 'kb'}", "chunk=50"]) == 2
    assert "unknown option `chunk`" in capsys.readouterr().err


def _qa_corpus(root, rng, n_docs=12):
    """Markdown documents of random facts and a SQuAD file over them: one question per fact, answer = its last word."""
    articles = []
    for d in range(n_docs):
        title = f"Site {d}"
        sentences = [fact(rng) for _ in range(4)]
        write(root / "docs" / f"site{d}.md", f"# {title}\n\n" + " ".join(sentences))
        context = " ".join(sentences)
        qas = []
        for s, sentence in enumerate(sentences):
            answer = sentence.rstrip(".").split()[-1]
            start = context.index(sentence) + len(sentence) - 1 - len(answer)
            question = "What follows " + " ".join(sentence.split()[:3]).lower() + "?"
            qas.append({"id": f"d{d}s{s}", "question": question, "answers": [{"text": answer, "answer_start": start}]})
        articles.append({"title": title.replace(" ", "_"), "paragraphs": [{"context": context, "qas": qas}]})
    write(root / "squad.json", json.dumps({"version": "1.1", "data": articles}))
    return root / "docs", root / "squad.json"


def test_prepare_then_train_export_ask_and_serve_agree(tmp_path, capsys):
    docs, squad = _qa_corpus(tmp_path, random.Random(11))
    kb = tmp_path / "kb"
    assert cli.main(["prepare", str(docs), f"out={kb}", "chunk_tokens=16", "overlap=4", f"qa={squad}",
                     "progress=false"]) == 0
    stats = json.loads((kb / "stats.json").read_text())
    assert stats["qa"]["questions"] == 48 and stats["qa"]["aligned"] == 48
    passages = {r["id"]: r for r in _passages(kb)}
    for line in (kb / "qa.jsonl").read_text().splitlines():  # every gold chunk holds its answer
        rec = json.loads(line)
        assert rec["gold_passage_ids"] and rec["group"] == rec["gold_passage_ids"][0].split("#")[0]
        assert all(rec["answers"][0] in passages[pid]["text"] for pid in rec["gold_passage_ids"])

    run_dir = tmp_path / "run"
    train(tiny_config("data=prepared", f"data.prepared_dir={kb}", "trainer.max_steps=4", "eval.before_training=false",
                      "model.reader_warmup_steps=0", run_dir=run_dir), progress=False)
    assert cli.main(["export", str(run_dir), str(tmp_path / "export")]) == 0
    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    question = predictions[0]["question"]
    capsys.readouterr()
    assert cli.main(["ask", str(tmp_path / "export"), question, "--json"]) == 0
    (asked,) = json.loads(capsys.readouterr().out)
    with TestClient(create_app(RagPipeline.from_pretrained(tmp_path / "export"))) as client:
        served = client.post("/ask", json={"question": question}).json()
    assert asked == served
    assert (asked["answer"], [c["pid"] for c in asked["passages"]]) == (predictions[0]["answer"],
                                                                         predictions[0]["retrieved"])
    assert asked["passages"][0]["title"].startswith("Site ")
