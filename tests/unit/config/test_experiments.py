"""Every experiment file under experiments/ composes by name from any directory; experiments inherit (a variant is a
few lines); the real-scale NQ configs match the RAG paper."""

from pathlib import Path

import pytest
import torch
from helpers import REPO
from transformers import DPRConfig, DPRContextEncoder, DPRQuestionEncoder

from rag_e2e.compose import compose
from rag_e2e.retrieval.encoders import BiEncoder

EXPERIMENTS = sorted((REPO / "experiments").glob("*/*.yaml"))
EXPERIMENTS = [p for p in EXPERIMENTS if p.parent.name not in ("sweeps", "wandb")]


def _name(path: Path) -> str:
    return path.relative_to(REPO / "experiments").with_suffix("").as_posix()


def _compose_elsewhere(tmp_path, monkeypatch, *overrides):
    monkeypatch.chdir(tmp_path)  # experiment names do not depend on the working directory
    return compose(list(overrides))


def _content_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_there_are_experiment_files():
    names = {p.relative_to(REPO / "experiments").as_posix() for p in EXPERIMENTS}
    assert {"squad/generator_only.yaml", "squad/fixed_retriever.yaml", "squad/rag_original.yaml",
            "squad/rag_end2end.yaml", "nq/rag_paper_nq.yaml", "nq/rag_paper_nq_end2end.yaml"} <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_experiment_composes(path, tmp_path, monkeypatch):
    cfg = _compose_elsewhere(tmp_path, monkeypatch, f"experiment={_name(path)}")
    assert cfg.name and cfg.trainer.max_steps >= 0


def test_a_variant_is_the_keys_it_changes_over_its_parent(tmp_path, monkeypatch):
    """squad/fixed_retriever inherits squad/rag_original and sets one key (and its name): one short file."""
    parent = _compose_elsewhere(tmp_path, monkeypatch, "experiment=squad/rag_original")
    child = compose(["experiment=squad/fixed_retriever"])
    assert child.retriever.freeze_query_encoder and not parent.retriever.freeze_query_encoder
    child.retriever.freeze_query_encoder, child.name = False, parent.name
    assert child == parent
    assert len(_content_lines(REPO / "experiments" / "squad" / "fixed_retriever.yaml")) <= 6


def test_nq_end2end_is_a_few_lines_over_nq(tmp_path, monkeypatch):
    nq = _compose_elsewhere(tmp_path, monkeypatch, "experiment=nq/rag_paper_nq")
    e2e = compose(["experiment=nq/rag_paper_nq_end2end"])
    assert e2e.data == nq.data and e2e.encoder == nq.encoder and e2e.generator == nq.generator
    assert e2e.index == nq.index and e2e.eval == nq.eval and e2e.trainer == nq.trainer
    lines = _content_lines(REPO / "experiments" / "nq" / "rag_paper_nq_end2end.yaml")
    assert len(lines) <= 15 < len(_content_lines(REPO / "experiments" / "nq" / "rag_paper_nq.yaml"))


def test_header_package_global_is_real():
    """`# @package _global_` is Hydra's header: without it an experiment's `data:` would land under `experiment.`"""
    for path in EXPERIMENTS:
        assert path.read_text().startswith("# @package _global_\n"), path


@pytest.mark.parametrize("name", ["rag_paper_nq", "rag_paper_nq_end2end"])
def test_nq_configs_are_the_rag_paper_setup(name):
    """Dry run: compose and validate offline; nothing is downloaded."""
    cfg = compose([f"experiment=nq/{name}"])
    assert cfg.encoder.name_or_path == "facebook/dpr-question_encoder-single-nq-base"
    assert cfg.encoder.passage_name_or_path == "facebook/dpr-ctx_encoder-single-nq-base"
    assert cfg.encoder.pooling == "cls" and cfg.generator.name_or_path == "facebook/bart-large"
    assert cfg.data.corpus_path.endswith("psgs_w100.tsv") and cfg.data.qa_format == "nq_open"
    assert cfg.retriever.k == 5 and cfg.model.loss == "sequence" and cfg.index.kind == "hnsw"
    assert cfg.trainer.accelerator == "gpu" and cfg.index.embeddings_dir  # 21M vectors stay on disk
    end2end = name.endswith("end2end")
    assert cfg.retriever.train_passage_encoder == end2end and cfg.refresh.mode == ("async" if end2end else "off")


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("llm/*.yaml")) +
                         sorted((REPO / "experiments").glob("squad_llm_gpu/*.yaml")), ids=lambda p: p.stem)
def test_real_scale_decoder_only_configs_are_lora_or_frozen_bf16_on_gpu(path):
    """Dry run offline: hub readers in bf16 on GPUs, LoRA adapters or a frozen reader; nothing is downloaded."""
    cfg = compose([f"experiment={_name(path)}"])
    gen = cfg.generator
    assert "/" in gen.name_or_path and gen.dtype == "bfloat16" and cfg.trainer.accelerator == "gpu"
    assert (gen.lora.r > 0) != (not gen.train) and cfg.trainer.precision == "bf16-mixed"
    if path.parent.name == "llm":
        assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 8 and cfg.data.qa_format == "nq_open"


def test_cpu_table_uses_a_frozen_packaged_reader_and_one_setting():
    systems = {p.stem: compose([f"experiment={_name(p)}"])
               for p in sorted((REPO / "experiments" / "squad_llm").glob("*.yaml")) if p.stem != "setting"}
    assert set(systems) == {"generator_only", "fixed_retriever", "rag_original", "rag_end2end", "gold_passage"}
    for cfg in systems.values():
        assert cfg.generator.name_or_path == "gemma3_270m" and not cfg.generator.train
        assert (cfg.data.max_eval_questions, cfg.generator.max_source_length) == (100, 192)
    assert systems["generator_only"].retriever.closed_book and systems["gold_passage"].retriever.read_gold
    assert systems["rag_end2end"].retriever.train_passage_encoder and systems["rag_end2end"].refresh.mode == "sync"


def test_dpr_style_encoders_pool_through_their_projection():
    """DPR encoders return pooler_output (no last_hidden_state); the bi-encoder uses it, per tower."""
    config = DPRConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, projection_dim=0)
    question, context = DPRQuestionEncoder(config).eval(), DPRContextEncoder(config).eval()
    encoder = BiEncoder(question, pooling="cls", passage_encoder=context)
    ids, mask = torch.randint(5, 100, (3, 7)), torch.ones(3, 7, dtype=torch.long)
    assert torch.equal(encoder.encode_query(ids, mask), question(input_ids=ids, attention_mask=mask).pooler_output)
    assert torch.equal(encoder.encode_passage(ids, mask), context(input_ids=ids, attention_mask=mask).pooler_output)
    assert encoder.passage_model is context


def test_experiment_that_does_not_exist_is_one_error_naming_it():
    from rag_e2e.errors import ConfigError

    with pytest.raises(ConfigError, match=r"no config `experiment=squad/nope` \(available: ") as err:
        compose(["experiment=squad/nope"])
    assert "\n" not in str(err.value)


def test_covidqa_table_shares_one_setting_and_differs_only_where_its_systems_do():
    systems = {p.stem: compose([f"experiment={_name(p)}"])
               for p in sorted((REPO / "experiments" / "covidqa").glob("*.yaml")) if p.stem != "setting"}
    assert set(systems) == {"closed_book", "fixed_retriever", "rag_original", "rag_end2end", "gold_passage"}
    for cfg in systems.values():
        assert cfg.data.source == "squad" and cfg.data.chunk_words == 100 and cfg.data.split_unit == "questions"
        assert cfg.generator.name_or_path == "gemma3_270m" and not cfg.generator.train
        assert cfg.generator.cache_outputs and cfg.generator.dtype == "auto"
        assert (cfg.eval.generation_questions, cfg.eval.val_generation_questions) == (200, 0)
    assert systems["closed_book"].retriever.closed_book and systems["gold_passage"].retriever.read_gold
    assert systems["fixed_retriever"].retriever.query_frozen and systems["fixed_retriever"].trainer.max_steps == 0
    original, end2end = systems["rag_original"], systems["rag_end2end"]
    assert not original.retriever.train_passage_encoder and original.refresh.mode == "off"
    assert end2end.retriever.train_passage_encoder and end2end.refresh.mode == "sync"
    assert original.retriever.k == end2end.retriever.k  # steps differ: each system's were chosen on dev
    assert (original.trainer.max_steps, end2end.trainer.max_steps) == (50, 150)
