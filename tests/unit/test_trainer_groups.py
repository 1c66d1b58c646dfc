"""trainer=ddp_gpu / trainer=fsdp, the strategy spellings DDP's unused-parameter setting needs, and Lightning's own
refusals as one line."""

import pytest
from helpers import tiny_config

from rag_e2e.compose import compose
from rag_e2e.errors import ConfigError
from rag_e2e.train import _strategy, build_trainer


@pytest.mark.parametrize("group,strategy", [("ddp_gpu", "ddp"), ("fsdp", "fsdp")])
def test_the_multi_gpu_groups_compose(group, strategy):
    t = compose([f"trainer={group}"]).trainer
    assert (t.accelerator, t.devices, t.strategy, t.precision) == ("gpu", -1, strategy, "bf16-mixed")


@pytest.mark.parametrize("name,warmup,want", [
    ("ddp", 5, "ddp_find_unused_parameters_true"),
    ("ddp_spawn", 5, "ddp_spawn_find_unused_parameters_true"),
    ("ddp_fork", 5, "ddp_fork_find_unused_parameters_true"),
    ("ddp_notebook", 5, "ddp_notebook_find_unused_parameters_true"),
    ("ddp_find_unused_parameters_true", 5, "ddp_find_unused_parameters_true"),
    ("ddp", 0, "ddp"),
    ("ddp_find_unused_parameters_false", 0, "ddp_find_unused_parameters_false"),
    ("fsdp", 5, "fsdp"),
    ("auto", 5, "auto"),
])
def test_a_warm_up_turns_every_ddp_spelling_to_find_unused_parameters(name, warmup, want):
    cfg = compose([f"trainer.strategy={name}", f"model.reader_warmup_steps={warmup}", "model.reader_loss_weight=1"])
    assert _strategy(cfg) == want


def test_refusing_unused_parameters_during_a_warm_up_is_one_line():
    cfg = compose(["trainer.strategy=ddp_find_unused_parameters_false", "model.reader_warmup_steps=5",
                   "model.reader_loss_weight=1"])
    with pytest.raises(ConfigError, match=r"use ddp_find_unused_parameters_true, or set `model.reader_warmup_steps=0`"):
        _strategy(cfg)


def test_fsdp_on_cpu_is_lightnings_refusal_in_one_line(tmp_path):
    cfg = tiny_config("trainer.strategy=fsdp", "trainer.accelerator=cpu", "trainer.devices=2", run_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^`trainer.strategy=fsdp` `trainer.accelerator=cpu` `trainer.devices=2`: "
                                          r".*requires a GPU accelerator") as err:
        build_trainer(cfg, tmp_path, refresh=None, progress=False, log=False)
    assert "\n" not in str(err.value)
