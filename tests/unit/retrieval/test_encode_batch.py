"""retriever.encode_batch_size=0: the refresh's encoding batch size measured per host, kept, and used."""

import json

import pytest
import torch
from helpers import assemble_with_index, tiny_config


def _builder_and_encoder(batch_size: int):
    from rag_e2e.retrieval.refresh import IndexBuilder

    parts = assemble_with_index()
    ram, encoder = parts.refresh.builder, parts.module.rag.encoder
    return IndexBuilder(ram.corpus, ram.tokenizer, ram.max_length, batch_size), ram, encoder


def test_zero_measures_once_per_host_and_encodes_as_the_chosen_size(tmp_path, monkeypatch):
    from rag_e2e.retrieval import encode_batch

    monkeypatch.setenv("RAG_E2E_CACHE", str(tmp_path))
    builder, ram, encoder = _builder_and_encoder(0)
    timed = []

    def fake_seconds(encoder, tokenizer, rows, max_length, sizes):  # 16 fastest, whatever this machine measures
        timed.append(list(sizes))
        return {str(s): 1.0 + abs(s - 16) for s in sizes}

    monkeypatch.setattr(encode_batch, "seconds_per_candidate", fake_seconds)
    index, _ = builder.build(encoder)
    assert builder.batch_size == 16
    assert timed == [[s for s in encode_batch.CPU_CANDIDATES if s <= len(ram.corpus)]]
    torch.testing.assert_close(index.p_reps, ram.encode(encoder), rtol=1e-5, atol=1e-5)  # padding widths differ

    table = json.loads((tmp_path / "tuning" / "encode_batch_size.json").read_text())
    (entries,) = table.values()  # one host
    (entry,) = entries.values()
    assert entry["choice"] == "16"
    again, _, _ = _builder_and_encoder(0)
    again.build(encoder)
    assert again.batch_size == 16 and len(timed) == 1  # read back, not measured again


def test_the_real_measurement_times_every_candidate_on_spread_rows(tmp_path, monkeypatch):
    from rag_e2e.retrieval import encode_batch

    monkeypatch.setenv("RAG_E2E_CACHE", str(tmp_path))
    builder, ram, encoder = _builder_and_encoder(0)
    rows = encode_batch.probe_rows(ram.corpus, 8)
    assert len(rows) == 8 and rows[0] is ram.corpus[0] and rows[1] is ram.corpus[len(ram.corpus) // 8]
    seconds = encode_batch.seconds_per_candidate(encoder, ram.tokenizer, rows, ram.max_length, [2, 4, 8])
    assert set(seconds) == {"2", "4", "8"} and all(s > 0 for s in seconds.values())
    assert encode_batch.measured_encode_batch_size(encoder, ram.tokenizer, ram.corpus, ram.max_length) in \
        encode_batch.CPU_CANDIDATES


def test_candidates_never_exceed_the_corpus():
    from rag_e2e.retrieval.encode_batch import candidates_for

    assert candidates_for(torch.device("cpu"), 20) == [8, 16]
    assert candidates_for(torch.device("cpu"), 5) == [5]
    assert candidates_for(torch.device("cuda"), 10**6)[-1] == 1024


def test_a_negative_batch_size_is_one_config_error():
    from rag_e2e.errors import ConfigError

    with pytest.raises(ConfigError, match="encode_batch_size"):
        tiny_config("retriever.encode_batch_size=-1")
