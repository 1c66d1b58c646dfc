"""trainer.accumulate_grad_batches / max_time / args reach lightning.Trainer, checked at compose time; one W&B run
per run_dir."""

import pytest
from helpers import tiny_config

from rag_e2e.errors import ConfigError


def test_trainer_keys_and_args_reach_the_trainer(tmp_path):
    from rag_e2e.train import assemble, build_trainer

    cfg = tiny_config("trainer.accumulate_grad_batches=4", "trainer.max_time=00:00:05:00",
                      "+trainer.args.deterministic=true", "+trainer.args.gradient_clip_algorithm=value",
                      run_dir=tmp_path)
    parts = assemble(cfg, progress=False)
    trainer = build_trainer(cfg, tmp_path, parts.refresh, progress=False, log=False)
    assert trainer.accumulate_grad_batches == 4
    assert trainer.gradient_clip_algorithm == "value"
    import torch

    assert torch.are_deterministic_algorithms_enabled()  # deterministic=true reached the Trainer
    torch.use_deterministic_algorithms(False)
    (timer,) = [c for c in trainer.callbacks if type(c).__name__ == "Timer"]
    assert timer._duration == 300


@pytest.mark.parametrize(("arg", "message"), [
    ("+trainer.args.accumulate_grad_batch=2",
     "not a lightning.Trainer argument (did you mean `accumulate_grad_batches`?)"),
    ("+trainer.args.callbacks=[]", "`trainer.args.callbacks` is set by rag_e2e itself"),
    ("+trainer.args.max_steps=3", "`trainer.args.max_steps` is set by `trainer.max_steps`"),
    ("trainer.accumulate_grad_batches=0", "`trainer.accumulate_grad_batches` >= 1"),
])
def test_bad_trainer_args_are_one_config_error(arg, message):
    with pytest.raises(ConfigError) as err:
        tiny_config(arg)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_resumed_run_keeps_its_wandb_run_id(tmp_path, monkeypatch):
    from rag_e2e.train import _loggers

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = tiny_config("logger.wandb=true", run_dir=tmp_path)
    first = [lg for lg in _loggers(cfg, tmp_path) if type(lg).__name__ == "WandbLogger"][0]
    again = [lg for lg in _loggers(cfg, tmp_path) if type(lg).__name__ == "WandbLogger"][0]
    assert first._wandb_init["id"] == again._wandb_init["id"] == (tmp_path / "wandb_id").read_text().strip()
    assert first._wandb_init["resume"] == "allow"
    other = tmp_path / "other"
    other.mkdir()
    assert [lg for lg in _loggers(cfg, other) if type(lg).__name__ == "WandbLogger"][0]._wandb_init["id"] != \
        first._wandb_init["id"]
