"""rag_e2e.data.corpus: DPR TSV and JSONL corpus loaders and their one-line errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from helpers import assert_data_error

from rag_e2e.data.corpus import load_corpus, load_corpus_jsonl, load_dpr_tsv
from rag_e2e.data.types import Passage
from rag_e2e.errors import DataFormatError

# Two rows in DPR psgs_w100.tsv style: text quoted, with "" escaping a quote; one quoted text spans two lines.
DPR_TSV = (
    "id\ttext\ttitle\n"
    '1\t"Aaron Aaron ( or ; ""Ahärôn"") is a prophet."\tAaron\n'
    "\n"
    '2\t"first line\nsecond line"\tTwo Lines\n'
    "3\tplain text\tPlain\n"
)
EXPECTED = [
    Passage("1", 'Aaron Aaron ( or ; "Ahärôn") is a prophet.', "Aaron"),
    Passage("2", "first line\nsecond line", "Two Lines"),
    Passage("3", "plain text", "Plain"),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_load_dpr_tsv(tmp_path):
    assert load_dpr_tsv(_write(tmp_path / "psgs.tsv", DPR_TSV)) == EXPECTED


def test_dpr_tsv_columns_found_by_header_name(tmp_path):
    path = _write(tmp_path / "psgs.tsv", "title\tid\ttext\nAaron\t1\tAaron is a prophet.\n")
    assert load_dpr_tsv(path) == [Passage("1", "Aaron is a prophet.", "Aaron")]
    path = _write(tmp_path / "untitled.tsv", "text\tid\nno title here\tx9\n")
    assert load_dpr_tsv(path) == [Passage("x9", "no title here", "")]


def test_dpr_tsv_gzip(tmp_path):
    path = tmp_path / "psgs.tsv.gz"
    path.write_bytes(gzip.compress(DPR_TSV.encode()))
    assert load_corpus(path) == EXPECTED


@pytest.mark.parametrize(
    ("body", "line", "field", "text"),
    [
        # line 4 is the row after the two-line quoted text (which occupies lines 2-3)
        ('1\t"a\nb"\tT\n2\tonly two\n', 4, None, "expected 3 tab-separated columns, found 2"),
        ("1\tx\tT\n\n2\tx\tT\t extra\n", 4, None, "found 4"),
        ("1\tfirst\tT\n1\tsecond\tT\n", 3, "id", "duplicate id '1' (first seen on line 2)"),
        ("1\t   \tT\n", 2, "text", "empty text for passage '1'"),
        ("\tsome text\tT\n", 2, "id", "empty id"),
        ('1\t"bad"quote\tT\n', 2, None, "malformed TSV"),
        ('1\tok\tT\n2\t"never closed\tT\n', 3, None, "malformed TSV"),
    ],
)
def test_dpr_tsv_errors(tmp_path, body, line, field, text):
    path = _write(tmp_path / "psgs.tsv", "id\ttext\ttitle\n" + body)
    with pytest.raises(DataFormatError) as exc:
        load_dpr_tsv(path)
    assert_data_error(exc, path, line, field, text)


def test_dpr_tsv_header_errors(tmp_path):
    path = _write(tmp_path / "psgs.tsv", "pid\ttext\ttitle\n1\tx\tT\n")
    with pytest.raises(DataFormatError) as exc:
        load_dpr_tsv(path)
    assert_data_error(exc, path, 1, "id", "lacks column 'id'")
    path = _write(tmp_path / "empty.tsv", "\n")
    with pytest.raises(DataFormatError) as exc:
        load_dpr_tsv(path)
    assert_data_error(exc, path, None, None, "empty file")


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "psgs.tsv.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataFormatError) as exc:
        load_corpus(path)
    assert_data_error(exc, path, 1, None, "cannot read")


def test_load_corpus_jsonl(tmp_path):
    path = _write(
        tmp_path / "corpus.jsonl",
        '{"id": 7, "text": "seven", "title": "Seven"}\n\n{"id": "p8", "text": "eight", "extra": 1}\n',
    )
    assert load_corpus_jsonl(path) == [Passage("7", "seven", "Seven"), Passage("p8", "eight", "")]
    assert load_corpus(path) == load_corpus_jsonl(path)


@pytest.mark.parametrize(
    ("line3", "field", "text"),
    [
        ('{"text": "x"}', "id", "missing; expected a string or integer"),
        ('{"id": true, "text": "x"}', "id", "got boolean"),
        ('{"id": 1.5, "text": "x"}', "id", "got number"),
        ('{"id": "b"}', "text", "missing; expected a string"),
        ('{"id": "b", "text": ""}', "text", "empty text for passage 'b'"),
        ('{"id": "b", "text": "x", "title": null}', "title", "expected a string, got null"),
        ('{"id": "a", "text": "x"}', "id", "duplicate id 'a' (first seen on line 1)"),
        ('{"id": "b", "text": "x"', None, "invalid JSON"),
    ],
)
def test_corpus_jsonl_errors(tmp_path, line3, field, text):
    path = _write(tmp_path / "corpus.jsonl", '{"id": "a", "text": "x"}\n\n' + line3 + "\n")
    with pytest.raises(DataFormatError) as exc:
        load_corpus_jsonl(path)
    assert_data_error(exc, path, 3, field, text)


def test_load_corpus_dispatch_errors(tmp_path):
    path = tmp_path / "missing.tsv"
    with pytest.raises(DataFormatError) as exc:
        load_corpus(path)
    assert_data_error(exc, path, None, None, "file not found")
    path = _write(tmp_path / "corpus.csv", "id,text\n")
    with pytest.raises(DataFormatError) as exc:
        load_corpus(path)
    assert_data_error(exc, path, None, None, "cannot infer corpus format from '.csv'")
    assert load_corpus(_write(tmp_path / "c.txt", "id\ttext\n1\tx\n"), fmt="dpr_tsv") == [Passage("1", "x")]
    with pytest.raises(ValueError, match="fmt must be"):
        load_corpus(path, fmt="csv")  # type: ignore[arg-type]
