"""Property-based tests (hypothesis): arbitrary bytes and records give a correct load or one `DataFormatError` naming
file, line and field, never another exception; arbitrary overrides give a config or one `ConfigError`; the top-k
merge equals a float64 sort of all candidates."""

from __future__ import annotations

import json
import string

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rag_e2e.compose import compose  # noqa: E402
from rag_e2e.data.corpus import load_corpus  # noqa: E402
from rag_e2e.data.qa import load_qa  # noqa: E402
from rag_e2e.errors import ConfigError, DataFormatError  # noqa: E402
from rag_e2e.retrieval.distributed import merge_topk  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# JSON-ish values, records with the loaders' field names (sometimes right, mostly wrong), and lines of raw bytes.
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                                           inner, max_size=3),
                      max_leaves=6)
FIELDS = ["id", "text", "title", "question", "answers", "answer", "gold_passage_ids", "group", "context"]
records = st.dictionaries(st.sampled_from(FIELDS), values, max_size=5)
json_lines = st.lists(st.one_of(records.map(json.dumps), st.text(max_size=20)), max_size=6)
raw = st.binary(max_size=200)


def _check_error(err: DataFormatError, path) -> None:
    assert err.path == str(path) and str(err).startswith(str(path)) and "\n" not in str(err)
    assert err.line is None or err.line >= 1


def _load_or_error(load, path) -> list:
    try:
        return load(path)
    except DataFormatError as err:
        _check_error(err, path)
        return []


@SETTINGS
@given(lines=json_lines)
def test_jsonl_corpus_and_questions_load_or_name_the_fault(tmp_path, lines):
    corpus, qa = tmp_path / "c.jsonl", tmp_path / "q.jsonl"
    for path in (corpus, qa):
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for passage in _load_or_error(load_corpus, corpus):
        assert passage.pid.strip() and passage.text.strip()
    for example in _load_or_error(load_qa, qa):
        assert example.question.strip() and example.answers and all(isinstance(a, str) for a in example.answers)


@SETTINGS
@given(data=raw, suffix=st.sampled_from([".jsonl", ".tsv", ".json"]))
def test_arbitrary_bytes_load_or_name_the_fault(tmp_path, data, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(data)
    if suffix != ".json":
        _load_or_error(load_corpus, path)
    if suffix != ".tsv":
        _load_or_error(load_qa, path)


@SETTINGS
@given(rows=st.lists(st.lists(st.text(alphabet=string.printable, max_size=6), min_size=1, max_size=4), max_size=5),
       header=st.sampled_from(["id\ttext\ttitle", "id\ttext", "text\ttitle", ""]))
def test_tsv_corpus_loads_or_names_the_fault(tmp_path, rows, header):
    path = tmp_path / "c.tsv"
    path.write_text(header + "\n" + "\n".join("\t".join(r) for r in rows) + "\n")
    for passage in _load_or_error(load_corpus, path):
        assert passage.pid.strip() and passage.text.strip()


KEYS = ["retriever.k", "retriever.temperature", "retriever.rerank_candidates", "eval.ks", "data.batch_size",
        "model.lr", "model.reader_warmup_steps", "refresh.schedule", "refresh.mode", "index.kind", "index.pq_bits",
        "encoder.num_heads", "generator.max_target_length", "trainer.max_steps", "retriever.nope", "nope"]
override_values = st.one_of(st.integers(-3, 300).map(str), st.sampled_from(["x", "[1,5]", "[0]", "sync", "-1:2",
                                                                           "null", "1e-3", "true", "exact", ""]))


@SETTINGS
@given(overrides=st.lists(st.tuples(st.sampled_from(KEYS), override_values).map("=".join), max_size=4))
def test_config_overrides_compose_or_name_the_key(overrides):
    try:
        compose(overrides)
    except ConfigError as err:
        assert "\n" not in str(err) and "`" in str(err)  # names a key or group in backticks


@SETTINGS
@given(b=st.integers(1, 3), shards=st.integers(1, 4), k=st.integers(1, 5), seed=st.integers(0, 2**16),
       ties=st.booleans())
def test_topk_merge_equals_a_sort_of_all_candidates(b, shards, k, seed, ties):
    g = torch.Generator().manual_seed(seed)
    c = shards * k
    scores = torch.randn(b, c, generator=g)
    if ties:
        scores = scores.round()  # many equal scores: the smaller row must come first
    rows = torch.stack([torch.randperm(1000, generator=g)[:c] for _ in range(b)])
    got_scores, got_rows = merge_topk(scores, rows, k)
    for i in range(b):
        ref = sorted(zip(scores[i].double().tolist(), rows[i].tolist()), key=lambda sr: (-sr[0], sr[1]))[:k]
        assert got_rows[i].tolist() == [r for _, r in ref]
        assert got_scores[i].double().tolist() == [s for s, _ in ref]
