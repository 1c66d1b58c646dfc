"""The frozen reader's on-disk output cache: a hit gives identical numbers and answers, across processes' worth of
fresh readers; a changed prompt, weights or answer misses. And the dtype chosen by measurement, once per host."""

import json

import pytest
import torch

from rag_e2e.config import GeneratorConfig
from rag_e2e.models.generator import build_reader
from rag_e2e.models.reader import MemoizedReader, Pairs
from rag_e2e.tuning import host_string, measured_choice

TINY = dict(d_model=32, num_layers=1, num_heads=2, ffn_dim=64, arch="llama", train=False, cache_outputs=True)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_E2E_CACHE", str(tmp_path))
    return tmp_path


def _rows():
    titles, texts = ["T", "U", "T"], ["alpha beta gamma", "delta epsilon", "alpha beta gamma"]
    pairs = Pairs(titles, texts, ["q one", "q two", "q one"])
    return pairs, ["beta", "epsilon zeta", "gamma"]


def test_a_second_reader_finds_every_output_on_disk_and_it_is_identical(cache):
    pairs, answers = _rows()
    first = build_reader(GeneratorConfig(**TINY))
    assert isinstance(first, MemoizedReader) and first.store is not None
    labels = first.answer_labels(answers, 8)
    ll = first.answer_token_ll(pairs, labels, 32)
    said = first.generate(pairs, 32, max_new_tokens=4)
    assert first.misses == 3 + 2 and first.hits == 1  # 3 scored rows, 2 distinct generation rows (rows 0, 2 alike)
    second = build_reader(GeneratorConfig(**TINY))  # a new run: empty memory, the same file
    assert torch.equal(second.answer_token_ll(pairs, labels, 32), ll)
    assert second.generate(pairs, 32, max_new_tokens=4) == said
    assert second.misses == 0 and second.hits == 6
    # ... and what it found is what the reader computes.
    plain = build_reader(GeneratorConfig(**{**TINY, "cache_outputs": False}))
    torch.testing.assert_close(plain.answer_token_ll(pairs, labels, 32), ll, rtol=0, atol=1e-6)


@pytest.mark.parametrize("change", [{"prompt_template": "Q: {question}\nT: {title}\nP: {text}\nA:"}, {"seed": 1},
                                    {"answer_prefix": ""}])
def test_a_changed_prompt_or_weights_misses(cache, change):
    pairs, answers = _rows()
    first = build_reader(GeneratorConfig(**TINY))
    first.answer_token_ll(pairs, first.answer_labels(answers, 8), 32)
    other = build_reader(GeneratorConfig(**{**TINY, **change}))
    other.answer_token_ll(pairs, other.answer_labels(answers, 8), 32)
    assert other.hits == 0 and other.misses == 3


def test_a_changed_row_misses_and_decoding_settings_are_part_of_the_key(cache):
    pairs, answers = _rows()
    reader = build_reader(GeneratorConfig(**TINY))
    reader.answer_token_ll(pairs, reader.answer_labels(answers, 8), 32)
    again = build_reader(GeneratorConfig(**TINY))
    again.answer_token_ll(pairs, again.answer_labels(["beta", "epsilon", "gamma"], 8), 32)  # row 1's answer
    assert (again.hits, again.misses) == (2, 1)
    again.answer_token_ll(pairs, again.answer_labels(answers, 8), 16)  # another source length: all new
    assert again.misses == 1 + 3
    reader.generate(pairs, 32, max_new_tokens=4)
    again.generate(pairs, 32, max_new_tokens=5)
    assert again.misses == 4 + 2


def test_a_corrupt_cache_file_is_one_clear_error(cache):
    from rag_e2e.errors import RagE2EError

    build_reader(GeneratorConfig(**TINY)).store.close()
    db = next((cache / "reader_outputs").glob("*.sqlite"))
    for extra in db.parent.glob(db.name + "-*"):
        extra.unlink()
    db.write_bytes(b"not a database" * 100)
    with pytest.raises(RagE2EError, match="reader output cache is unreadable"):
        build_reader(GeneratorConfig(**TINY))


def test_measured_choice_is_kept_per_host_and_remeasured_on_another(cache, monkeypatch):
    calls = []

    def measure():
        calls.append(1)
        return {"slow": 2.0, "fast": 1.0}

    assert measured_choice("thing", "shape A", measure) == "fast"
    assert measured_choice("thing", "shape A", lambda: {"slow": 0.0}) == "fast" and len(calls) == 1  # remembered
    table = json.loads((cache / "tuning" / "thing.json").read_text())
    assert table[host_string()]["shape A"]["seconds"] == {"slow": 2.0, "fast": 1.0}
    monkeypatch.setattr("rag_e2e.tuning.host_string", lambda: "another CPU | 64 cpus")
    assert measured_choice("thing", "shape A", lambda: {"slow": 3.0, "other": 0.5}) == "other"
    assert set(json.loads((cache / "tuning" / "thing.json").read_text())) == {host_string(), "another CPU | 64 cpus"}
    (cache / "tuning" / "thing.json").write_text("{not json")  # a corrupt file is measured over, then rewritten
    assert measured_choice("thing", "shape A", measure) == "fast" and len(calls) == 2


def test_dtype_auto_is_for_frozen_readers_and_picks_a_measured_dtype(cache, monkeypatch):
    from rag_e2e.errors import ConfigError

    with pytest.raises(ConfigError, match="generator.dtype=auto"):
        GeneratorConfig(arch="llama", dtype="auto")
    monkeypatch.setattr("rag_e2e.models.generator.measured_choice", lambda kind, key, measure: "bfloat16")
    reader = build_reader(GeneratorConfig(**{**TINY, "dtype": "auto"}))
    assert next(reader.model.parameters()).dtype == torch.bfloat16
