"""RagPipeline: save_pretrained / from_pretrained round trips exactly, for seq2seq, causal and LoRA readers."""

import json

import pytest
import torch
from helpers import tiny_config

from rag_e2e.errors import ConfigError
from rag_e2e.inference.export import pipeline_from_config
from rag_e2e.inference.pipeline import RagPipeline
from rag_e2e.retrieval.index_io import IndexMismatchError, state_fingerprint

QUESTIONS = ["where was Timku Tukrol born?", "what is the name of the pet of Ferik Stenkrom?", "who?"]


def _perturb(module: torch.nn.Module, seed: int) -> None:
    """Move every weight off its initial value, so a round trip that re-initialises anything is caught."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def _answers(pipeline: RagPipeline, k: int = 3) -> list[tuple[str, list[str], list[float]]]:
    return [(a.answer, [c.pid for c in a.passages], [c.score for c in a.passages])
            for a in pipeline.ask(QUESTIONS, k=k)]


@pytest.fixture(scope="module")
def seq2seq_pipeline():
    return pipeline_from_config(tiny_config())


def test_round_trip_is_exact(seq2seq_pipeline, tmp_path):
    before = _answers(seq2seq_pipeline)
    seq2seq_pipeline.save_pretrained(tmp_path / "p")
    loaded = RagPipeline.from_pretrained(tmp_path / "p")
    assert _answers(loaded) == before
    for name in ("query_model", "passage_model"):
        assert state_fingerprint(getattr(loaded.encoder, name)) == state_fingerprint(
            getattr(seq2seq_pipeline.encoder, name))
    assert state_fingerprint(loaded.reader.model) == state_fingerprint(seq2seq_pipeline.reader.model)
    assert [p.pid for p in loaded.corpus] == [p.pid for p in seq2seq_pipeline.corpus]
    torch.testing.assert_close(torch.as_tensor(loaded.index.p_reps), torch.as_tensor(seq2seq_pipeline.index.p_reps),
                               rtol=0, atol=0)
    assert json.loads((tmp_path / "p" / "pipeline.json").read_text())["format_version"] == 1


def test_citations_are_the_top_k_by_score(seq2seq_pipeline):
    (answer,) = seq2seq_pipeline.ask("where was Timku Tukrol born?", k=4)
    scores = [c.score for c in answer.passages]
    assert [c.rank for c in answer.passages] == [1, 2, 3, 4] and scores == sorted(scores, reverse=True)
    tok = seq2seq_pipeline.tokenizer([answer.question], return_tensors="pt")
    q = seq2seq_pipeline.encoder.encode_query(tok["input_ids"], tok["attention_mask"])[0].double()
    p_reps = torch.as_tensor(seq2seq_pipeline.index.p_reps).double()  # float64 reference over the whole corpus
    best = (p_reps @ q).topk(4)
    assert [c.pid for c in answer.passages] == [seq2seq_pipeline.corpus[r].pid for r in best.indices.tolist()]
    torch.testing.assert_close(torch.tensor(scores, dtype=torch.float64), best.values, atol=1e-3, rtol=0)  # rounded


def test_ask_validates_k(seq2seq_pipeline):
    n = len(seq2seq_pipeline.corpus)
    with pytest.raises(ValueError, match=rf"k must be in \[1, {n}\]"):
        seq2seq_pipeline.ask("x", k=n + 1)
    with pytest.raises(ValueError, match="k must be"):
        seq2seq_pipeline.ask("x", k=0)


def test_causal_reader_and_shared_towers_round_trip(tmp_path):
    pipeline = pipeline_from_config(tiny_config("generator=tiny_llama", "encoder.shared_towers=true"))
    _perturb(pipeline.encoder, 0)
    _perturb(pipeline.reader.model, 1)
    pipeline.index.p_reps[:] = pipeline.rag.encode_rows(torch.arange(len(pipeline.corpus))[None])[0].detach()
    before = _answers(pipeline)
    pipeline.save_pretrained(tmp_path / "p")
    assert not (tmp_path / "p" / "passage_encoder").exists()  # one tower
    assert _answers(RagPipeline.from_pretrained(tmp_path / "p")) == before


@pytest.mark.parametrize("lora", ["merged", "adapter"])
def test_lora_reader_saves_merged_or_as_adapter(tmp_path, lora):
    pipeline = pipeline_from_config(tiny_config("generator.lora.r=4"))
    for name, p in pipeline.reader.model.named_parameters():
        if "lora_B" in name:  # B starts at zero (the adapter is a no-op): make it change the answers
            torch.nn.init.normal_(p, std=0.5)
    before = _answers(pipeline)
    pipeline.save_pretrained(tmp_path / lora, lora=lora)
    assert (tmp_path / lora / "generator_adapter").is_dir() == (lora == "adapter")
    loaded = RagPipeline.from_pretrained(tmp_path / lora)
    assert _answers(loaded) == before
    assert hasattr(loaded.reader.model, "merge_and_unload") == (lora == "adapter")
    assert hasattr(pipeline.reader.model, "merge_and_unload")  # saving merged left the live model as it was


def test_compressed_index_on_load(seq2seq_pipeline, tmp_path):
    seq2seq_pipeline.save_pretrained(tmp_path / "p")
    loaded = RagPipeline.from_pretrained(tmp_path / "p", index_kind="hnsw", index_params={"hnsw_m": 8})
    assert loaded.index.kind == "hnsw"
    overlap = [len(set(a[1]) & set(b[1])) / 3 for a, b in zip(_answers(loaded), _answers(seq2seq_pipeline))]
    assert sum(overlap) / len(overlap) >= 2 / 3  # a tiny corpus: HNSW is close to exact


def test_refuses_what_is_not_a_pipeline(seq2seq_pipeline, tmp_path):
    with pytest.raises(ConfigError, match="not an exported pipeline"):
        RagPipeline.from_pretrained(tmp_path)
    seq2seq_pipeline.save_pretrained(tmp_path / "p")
    with pytest.raises(ConfigError, match="exists; export into a new folder"):
        seq2seq_pipeline.save_pretrained(tmp_path / "p")
    lines = (tmp_path / "p" / "passages.jsonl").read_text().splitlines()
    edited = json.loads(lines[0]) | {"text": "edited"}
    (tmp_path / "p" / "passages.jsonl").write_text("\n".join([json.dumps(edited), *lines[1:]]) + "\n")
    with pytest.raises(IndexMismatchError, match="corpus fingerprint"):
        RagPipeline.from_pretrained(tmp_path / "p")


def test_interrupted_save_leaves_nothing(seq2seq_pipeline, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("rag_e2e.inference.pipeline.save_index", fail)
    with pytest.raises(OSError, match="disk full"):
        seq2seq_pipeline.save_pretrained(tmp_path / "p")
    assert list(tmp_path.iterdir()) == []
