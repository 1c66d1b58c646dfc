"""The W&B sweep files stay valid for `wandb sweep` + `wandb agent`, and sweep what the Hydra sweep of the same name
sweeps (one list of points, two front ends)."""

import itertools
from pathlib import Path

import pytest
import yaml
from helpers import REPO

from rag_e2e.compose import compose, compose_dict

WANDB = sorted((REPO / "experiments" / "wandb").glob("*.yaml"))
TOP_LEVEL = {"name", "description", "program", "command", "method", "metric", "parameters", "run_cap",
             "early_terminate", "project", "entity"}


def _value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "[" + ",".join(map(_value, value)) + "]" if isinstance(value, list) else str(value)


def _wandb_points(spec: dict) -> set[tuple[str, ...]]:
    keys = list(spec["parameters"])
    values = [entry["values"] if "values" in entry else [entry["value"]] for entry in spec["parameters"].values()]
    return {tuple(sorted(f"{k}={_value(v)}" for k, v in zip(keys, combo))) for combo in itertools.product(*values)}


def _hydra_points(name: str) -> set[tuple[str, ...]]:
    """The Hydra sweep's points as `key=value`, its constant group picks (`override /experiment: x`) included."""
    from rag_e2e.launch import grid_points

    base = compose_dict([f"sweep={name}"], return_hydra_config=True)
    points = grid_points([], base)
    files = (REPO / "experiments" / "sweeps" / f"{name}.yaml", REPO / "configs" / "sweep" / f"{name}.yaml")
    defaults = yaml.safe_load(next(p for p in files if p.is_file()).read_text()).get("defaults", [])
    picks = [f"{key.removeprefix('override /')}={choice}" for entry in defaults for key, choice in entry.items()
             if not key.startswith("override /hydra")]
    keys_of = lambda point: {item.split("=")[0] for item in point}  # noqa: E731
    return {tuple(sorted(point + [p for p in picks if p.split("=")[0] not in keys_of(point)]))
            for point in points}


def test_there_are_wandb_sweep_files():
    assert {p.stem for p in WANDB} >= {"ablation_k", "ablation_loss", "ablation_refresh", "squad_systems"}


@pytest.mark.parametrize("path", WANDB, ids=lambda p: p.stem)
def test_wandb_file_is_a_valid_sweep_calling_our_entry_point(path: Path):
    spec = yaml.safe_load(path.read_text())
    assert set(spec) <= TOP_LEVEL and spec["method"] in ("grid", "random", "bayes")
    assert spec["metric"]["goal"] in ("maximize", "minimize") and spec["metric"]["name"].startswith("test/")
    # W&B's default command passes --key=value; ours passes key=value to `rag-e2e train` (Hydra's syntax).
    assert spec["command"][-3:] == ["rag_e2e.cli", "train", "${args_no_hyphens}"]
    first = sorted(_wandb_points(spec))[0]
    assert compose(list(first)).name  # what the agent would pass composes


@pytest.mark.parametrize("path", WANDB, ids=lambda p: p.stem)
def test_wandb_file_sweeps_the_points_of_the_hydra_sweep(path: Path):
    spec = yaml.safe_load(path.read_text())
    assert _wandb_points(spec) == _hydra_points(path.stem)
