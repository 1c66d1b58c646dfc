"""The memory-mapped corpus: the same passages, rows and ids as the list, from a shared Arrow file."""

import json
import pickle
import random

import pytest

from rag_e2e.data import mapped
from rag_e2e.data.corpus import load_corpus
from rag_e2e.data.mapped import MappedCorpus, open_mapped, row_lookup
from rag_e2e.errors import DataFormatError
from rag_e2e.retrieval.index_io import corpus_fingerprint


def _corpus_file(tmp_path, n: int, seed: int):
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "δέλτα", "naïve", "tab\there", 'quote"d', "new\nline"]
    path = tmp_path / "corpus.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in rng.sample(range(10 * n), n):  # ids out of order, some numeric
            record = {"id": i if i % 3 else f"doc-{i}", "text": " ".join(rng.choices(words, k=rng.randint(1, 12)))}
            if i % 2:
                record["title"] = rng.choice(words)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(mapped, "BATCH_ROWS", 7)  # many record batches even at test sizes
    return tmp_path / "cache"


def test_every_passage_slice_and_row_matches_the_list(tmp_path, cache):
    path = _corpus_file(tmp_path, 100, seed=random.randrange(10**6))
    listed, ours = load_corpus(path), open_mapped(path, cache=cache)
    assert len(ours) == len(listed) == 100
    assert [ours[i] for i in range(100)] == listed and list(ours) == listed
    assert ours[-1] == listed[-1]
    for s in (slice(3, 40), slice(None, None, 3), slice(90, 200), slice(50, 10), slice(-5, None), slice(5, 60, 7)):
        assert ours[s] == listed[s], s
    with pytest.raises(IndexError):
        ours[100]
    rows = row_lookup(listed)
    assert all(ours.row_of(p.pid) == rows(p.pid) == r for r, p in enumerate(listed))
    assert ours.row_of("no-such-id") is None and ours.row_of("") is None
    assert corpus_fingerprint(ours) == corpus_fingerprint(listed)


def test_equal_hashes_fall_back_to_comparing_ids(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(mapped, "pid_hash", lambda pid: len(pid) % 3)  # most ids collide
    path = _corpus_file(tmp_path, 40, seed=1)
    listed, ours = load_corpus(path), open_mapped(path, cache=cache)
    assert [ours.row_of(p.pid) for p in listed] == list(range(40))
    assert ours.row_of("doc-nope") is None


def test_pickles_by_reference_and_reopens(tmp_path, cache):
    ours = open_mapped(_corpus_file(tmp_path, 30, seed=2), cache=cache)
    blob = pickle.dumps(ours)
    assert len(blob) < 500  # the folder's path, not the passages
    again = pickle.loads(blob)
    assert isinstance(again, MappedCorpus) and list(again) == list(ours)


def test_converted_once_and_again_when_the_file_changes(tmp_path, cache):
    path = _corpus_file(tmp_path, 20, seed=3)
    first = open_mapped(path, cache=cache)
    stamp = (first.folder / "meta.json").stat().st_mtime_ns
    assert open_mapped(path, cache=cache).folder == first.folder
    assert (first.folder / "meta.json").stat().st_mtime_ns == stamp  # not rewritten
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "added", "text": "a new passage"}) + "\n")
    changed = open_mapped(path, cache=cache)
    assert changed.folder != first.folder and len(changed) == 21 and changed[20].pid == "added"


def test_a_bad_record_names_its_line_and_leaves_no_cache(tmp_path, cache):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "text": "fine"}\n{"id": "b"}\n')
    with pytest.raises(DataFormatError, match=r"bad.jsonl:2: field 'text'"):
        open_mapped(path, cache=cache)
    assert not (cache / "corpora").exists() or [p for p in (cache / "corpora").iterdir()] == []
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(DataFormatError, match=r"dup.jsonl:2: .*duplicate"):
        open_mapped(dup, cache=cache)


def test_an_empty_corpus_is_refused(tmp_path, cache):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(DataFormatError, match="no passages"):
        open_mapped(path, cache=cache)


def _mapped_rss_kb(file) -> int:
    """Resident KB of this process's mappings of `file` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        if "-" in line.split(" ", 1)[0]:  # a mapping's header line
            inside = line.rstrip().endswith(str(file))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/smaps"), reason="needs Linux /proc")
def test_passage_text_is_read_not_mapped_into_the_resident_set(tmp_path, cache):
    # 64 passages of 64 KB: reading them all through the mapping would make ~4 MB of it resident
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        for i in range(64):
            f.write(json.dumps({"id": f"p{i}", "text": f"{i:02d}" + "x" * 65_534}) + "\n")
    ours = open_mapped(path, cache=cache)
    texts = [ours[i].text for i in range(64)] + [p.text for p in ours] + [p.text for p in ours[10:50]]
    assert all(t.startswith(f"{i % 64:02d}") and len(t) == 65_536 for i, t in enumerate(texts[:128]))
    assert ours.row_of("p63") == 63
    assert _mapped_rss_kb(ours.folder / "passages.arrow") < 256  # the footer and offsets pages only
