"""experiment=squad_open runs end to end on the real SQuAD v1.1 dev file (shrunk models, a few steps)."""

import json

import pytest
from helpers import SQUAD_DEV

from rag_e2e.compose import compose
from rag_e2e.train import train


@pytest.mark.skipif(not SQUAD_DEV.is_file(), reason=f"{SQUAD_DEV} not present")
def test_squad_open_smoke(tmp_path):
    cfg = compose([
        "experiment=squad_open", "encoder=tiny_bert", f"data.qa_path={SQUAD_DEV}", "data.max_eval_questions=12",
        "data.batch_size=2", "generator.d_model=32", "generator.ffn_dim=64", "generator.num_layers=1",
        "encoder.hidden_size=32", "encoder.intermediate_size=64", "encoder.max_passage_length=64",
        "trainer.max_steps=3", "trainer.val_check_interval=3", "eval.max_new_tokens=4", "logger.wandb=false",
        f"run_dir={tmp_path / 'run'}",
    ])
    metrics = json.loads(train(cfg, progress=False).read_text())
    assert metrics["train/steps"] == 3
    assert 0.0 <= metrics["test/recall@5"] <= 1.0 and 0.0 <= metrics["init/recall@5"] <= 1.0
    run_dir = next(tmp_path.iterdir())
    preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 12 and all(p["gold_pids"] for p in preds)  # SQuAD questions carry their paragraph id
