"""Cleaning, duplicate detection, QA alignment and the resume journal, on small written-out and random cases."""

import json
import random

import numpy as np
import pytest
from raw_docs import WORDS, pdf_bytes, write

from rag_e2e.errors import ConfigError
from rag_e2e.prepare.align import QARecord, gold_chunks, locate
from rag_e2e.prepare.chunk import Span
from rag_e2e.prepare.clean import clean_text, drop_page_boilerplate, repair_unicode, strip_markdown
from rag_e2e.prepare.dedupe import Deduper, Signer, text_hash
from rag_e2e.prepare.extract import decode_bytes, extract_file
from rag_e2e.prepare.manifest import FileEntry, Manifest


def test_unicode_is_repaired_and_normalised():
    assert repair_unicode("cafÃ©") == "café"  # UTF-8 read as cp1252
    assert repair_unicode("\ufb01nal \uff21\uff22 a\u00a0b") == "final AB a b"  # ligature, full width, NBSP
    assert clean_text("one\ntwo   three\n\n\n four ") == "one two three\n\nfour"


def test_markdown_syntax_goes_and_its_words_stay():
    md = "---\ntitle: x\n---\n# Head *one*\n\nSee [the docs](http://x.y) and `code`.\n\n| a | b |\n|---|---|\n| 1 | 2 |"
    assert [p.strip() for p in strip_markdown(md).split("\n") if p.strip()] == [
        "Head one", "See the docs and code.", "a ; b", "1 ; 2"]


def test_running_headers_and_page_numbers_are_dropped_but_not_content():
    rng = random.Random(0)
    bodies = [[" ".join(rng.sample(WORDS, 6)) for _ in range(5)] for _ in range(3)]
    pages = [f"Annual Report {2020 + i}\n" + "\n".join(body) + f"\nPage {i + 1} of 3" for i, body in enumerate(bodies)]
    assert drop_page_boilerplate(pages) == ["\n".join(body) for body in bodies]
    assert drop_page_boilerplate(["Only page title\nText."]) == ["Only page title\nText."]


def test_text_of_unknown_encoding_decodes():
    assert decode_bytes("naïve café".encode("cp1252")) == ("naïve café", "cp1252")
    assert decode_bytes("ok".encode("utf-16")) == ("ok", "utf-16")
    assert decode_bytes("é".encode()) == ("é", "utf-8")
    english = "BSkyB paid £304m to Robert of Jumièges for the rights, or so the story goes in the archive."
    assert decode_bytes(english.encode("cp1252")) == (english, "cp1252")  # not cp1250's "Ł304m", "Jumičges"
    polish = "Zażółć gęślą jaźń. Łódź jest dużym miastem w Polsce, a Kraków jest stolicą kultury."
    assert decode_bytes(polish.encode("cp1250"))[0] == polish
    russian = "Москва является столицей России и крупнейшим городом страны."
    assert decode_bytes(russian.encode("cp1251"))[0] == russian


def test_pdf_pages_become_one_document(tmp_path):
    path = write(tmp_path / "a.pdf", pdf_bytes([["Running head", "First page text."],
                                                ["Running head", "Second page text."]], title="Title (A)"))
    (doc,) = extract_file(path, "a.pdf").documents
    assert (doc.title, doc.text) == ("Title (A)", "First page text. Second page text.")


def _doc(rng, n=200):
    return " ".join(rng.choice(WORDS) + str(rng.randrange(50)) for _ in range(n))


def test_exact_and_near_duplicates_are_found_and_distinct_documents_kept():
    rng = random.Random(0)
    signer = Signer(128)
    dedupe = Deduper(0.8, 128, signer.scheme)
    base = _doc(rng)
    words = base.split()
    near = " ".join(words[:100] + ["CHANGED"] + words[101:])  # one word of 200
    docs = {"a": base, "b": "  " + base.replace(" ", "\n", 3), "c": near, "d": _doc(rng)}
    verdicts = {k: dedupe.offer(k, text_hash(t), signer.signature(t)) for k, t in docs.items()}
    assert verdicts["a"] is None and verdicts["d"] is None
    assert (verdicts["b"].kind, verdicts["b"].duplicate_of) == ("exact", "a")
    assert (verdicts["c"].kind, verdicts["c"].duplicate_of) == ("near", "a") and verdicts["c"].similarity > 0.8


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_minhash_similarity_estimates_the_shingle_jaccard(keep):
    rng = random.Random(int(keep * 10))
    signer = Signer(256)
    a = _doc(rng, 400).split()
    b = [w if rng.random() < keep else "x" + w for w in a]

    def shingles(words):
        return {" ".join(words[i:i + 5]).casefold() for i in range(len(words) - 4)}

    true = len(shingles(a) & shingles(b)) / len(shingles(a) | shingles(b))
    estimate = float(np.mean(signer.signature(" ".join(a)) == signer.signature(" ".join(b))))
    assert abs(estimate - true) < 0.08  # 256 permutations: std <= 0.031


def _record(left, answer, right):
    return QARecord("q", "?", (answer,), "", tuple(left.split()), tuple(answer.split()), tuple(right.split()))


def test_the_words_around_an_answer_pick_its_occurrence():
    text = "In 1990 the lab opened.\n\nThe second site opened in 1990 after the war."
    start = text.index("1990", 10)
    assert locate(_record("second site opened in", "1990", "after the war."), text) == (start, start + 4)
    assert locate(_record("", "1990", ""), text) is None  # twice, no context: ambiguous, not guessed
    assert locate(_record("", "lab", ""), text) == (12, 15)
    assert locate(_record("nowhere", "2001", ""), text) is None


def test_gold_chunks_hold_the_whole_answer_or_else_part_of_it():
    spans = [Span(0, 10, 3), Span(6, 20, 3), Span(20, 30, 3)]
    assert gold_chunks(spans, 7, 9) == [0, 1]
    assert gold_chunks(spans, 18, 22) == [1, 2]


def test_the_journal_drops_a_torn_line_and_refuses_other_settings(tmp_path):
    settings = {"chunk_tokens": 100}
    journal = Manifest(tmp_path, settings)
    source = write(tmp_path / "a.txt", "text")
    stat = source.stat()
    journal.record(FileEntry("a.txt", str(source), stat.st_size, stat.st_mtime_ns, "0" * 64, "done"))
    with open(tmp_path / "manifest.jsonl", "a") as f:
        f.write(json.dumps({"key": "b.txt"})[:10])  # killed mid-line
    reopened = Manifest(tmp_path, settings)
    assert list(reopened.entries) == ["a.txt"] and reopened.finished("a.txt", source) is not None
    write(source, "text, changed")
    assert reopened.finished("a.txt", source) is None
    with pytest.raises(ConfigError, match="chunk_tokens=100 \\(now 50\\)"):
        Manifest(tmp_path, {"chunk_tokens": 50})
