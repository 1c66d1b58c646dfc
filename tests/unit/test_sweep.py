"""Sweep files: W&B schema essentials, one-line errors naming file and key, expansion, run names, the local runner.

The runner tests swap the interpreter for a stub that writes metrics.json (or fails), so no training runs here.
"""

import json
import re
import stat
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO

from rag_e2e.compose import compose
from rag_e2e.errors import RagE2EError
from rag_e2e.sweep import cmd_sweep, expand, load_sweep, point_overrides, run_names, run_sweep

COMMAND = ["${env}", "${interpreter}", "-m", "rag_e2e.cli", "train", "${args_no_hyphens}"]
SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def grid() -> dict:
    return {
        "name": "k_and_loss", "method": "grid", "metric": {"name": "test/em", "goal": "maximize"},
        "parameters": {"experiment": {"value": "synthetic_demo"}, "retriever.k": {"values": [1, 5, 10]},
                       "model.loss": {"values": ["sequence", "token"]}},
        "command": COMMAND,
    }


def random_sweep() -> dict:
    return {
        "method": "random", "metric": {"name": "val/em", "goal": "maximize"}, "run_cap": 8, "command": COMMAND,
        "parameters": {"model.lr": {"distribution": "log_uniform_values", "min": 1.0e-4, "max": 1.0e-3},
                       "model.weight_decay": {"distribution": "uniform", "min": 0.0, "max": 0.1},
                       "retriever.k": {"distribution": "int_uniform", "min": 1, "max": 8},
                       "model.loss": {"distribution": "categorical", "values": ["sequence", "token"]}},
    }


def write(tmp_path: Path, sweep: dict, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def test_grid_is_the_cartesian_product_in_file_order(tmp_path):
    spec = load_sweep(write(tmp_path, grid()))
    points = expand(spec)
    assert len(points) == 3 * 2 and spec.name == "k_and_loss" and spec.metric == "test/em"
    assert points[0] == {"experiment": "synthetic_demo", "retriever.k": 1, "model.loss": "sequence"}
    assert [(p["retriever.k"], p["model.loss"]) for p in points[:3]] == [(1, "sequence"), (1, "token"), (5, "sequence")]
    assert run_names(spec, points)[:2] == ["k1-loss_sequence", "k1-loss_token"]  # constants stay out of names


def test_run_cap_cuts_a_grid(tmp_path):
    assert len(expand(load_sweep(write(tmp_path, grid() | {"run_cap": 4})))) == 4


def test_random_draws_run_cap_seeded_points_inside_the_bounds(tmp_path):
    spec = load_sweep(write(tmp_path, random_sweep()))
    points = expand(spec, seed=0)
    assert len(points) == 8
    assert points == expand(spec, seed=0) and points != expand(spec, seed=1)
    for p in points:
        assert 1.0e-4 <= p["model.lr"] <= 1.0e-3 and 0.0 <= p["model.weight_decay"] <= 0.1
        assert isinstance(p["retriever.k"], int) and 1 <= p["retriever.k"] <= 8
        assert p["model.loss"] in ("sequence", "token")
    assert len({p["model.lr"] for p in points}) == 8
    # a larger run_cap extends the same sequence, so finished runs keep their names
    longer = expand(load_sweep(write(tmp_path, random_sweep() | {"run_cap": 10}, "longer.yaml")))
    assert longer[:8] == points
    names = run_names(spec, points)
    assert names == run_names(spec, expand(spec, seed=0))
    assert len(set(names)) == 8 and all(SAFE.fullmatch(n) for n in names)


def test_points_become_overrides_that_compose(tmp_path):
    sweep = random_sweep()
    sweep["parameters"]["eval.ks"] = {"value": [1, 5]}
    sweep["parameters"]["retriever.freeze_query_encoder"] = {"value": False}
    point = expand(load_sweep(write(tmp_path, sweep)))[0]
    overrides = point_overrides(point)
    assert "eval.ks=[1,5]" in overrides and "retriever.freeze_query_encoder=false" in overrides
    cfg = compose(overrides)
    assert cfg.model.lr == point["model.lr"] and cfg.retriever.k == point["retriever.k"] and cfg.eval.ks == [1, 5]


def _mutate(sweep: dict, dotted: str, value) -> dict:
    """Set (or, with value=DELETE, remove) `a/b/c` in a nested dict; `/` because parameter keys contain dots."""
    *parents, last = dotted.split("/")
    node = sweep
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return sweep


DELETE = object()


@pytest.mark.parametrize(
    ("base", "where", "value", "key"),
    [
        (grid, "method", DELETE, "method"),
        (grid, "method", "hyperband", "method"),
        (grid, "metric/goal", "max", "metric.goal"),
        (grid, "metric", DELETE, "metric"),
        (grid, "metric/name", "em", "metric.name"),  # not a logged key
        (grid, "metric/name", "eval/em", "metric.name"),
        (grid, "parameter", {}, "parameter"),  # unknown top-level key (a typo of `parameters`)
        (grid, "parameters", DELETE, "parameters"),
        (grid, "parameters/retriever.k/values", [], "parameters.retriever.k.values"),
        (grid, "parameters/retriever.k/values", [1, 1], "parameters.retriever.k.values"),
        (grid, "parameters/retriever.k", {"value": 1, "values": [1, 2]}, "parameters.retriever.k"),
        (grid, "parameters/retriever.k", {"min": 1, "max": 3}, "parameters.retriever.k"),
        (grid, "parameters/retriever.k", {"valuez": [1]}, "parameters.retriever.k.valuez"),
        (grid, "parameters/model.lr", {"distribution": "uniform", "min": 0.1, "max": 0.2}, "parameters.model.lr"),
        (grid, "parameters/retriever.kk", {"values": [1, 2]}, "retriever.kk"),  # not an override key
        (grid, "parameters/experiment", {"value": "nowhere"}, "experiment=nowhere"),
        (grid, "parameters/run_dir", {"value": "x"}, "parameters.run_dir"),
        (grid, "command", DELETE, "command"),
        (grid, "command", ["python", "-m", "rag_e2e.cli", "train", "${args}"], "command"),
        (grid, "run_cap", 0, "run_cap"),
        (random_sweep, "parameters/model.lr/min", "1e-4", "parameters.model.lr.min"),  # YAML 1.1: a string
        (random_sweep, "parameters/model.lr/min", 0.0, "parameters.model.lr.min"),
        (random_sweep, "parameters/model.lr/max", 1.0e-5, "parameters.model.lr"),
        (random_sweep, "parameters/retriever.k/max", 8.5, "parameters.retriever.k.max"),
        (random_sweep, "parameters/model.lr/distribution", "normal", "parameters.model.lr.distribution"),
    ],
)
def test_invalid_sweep_is_one_line_error_naming_file_and_key(tmp_path, base, where, value, key):
    path = write(tmp_path, _mutate(base(), where, value))
    with pytest.raises(RagE2EError) as err:
        load_sweep(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and key in message and "\n" not in message


def test_flow_list_command_gets_a_hint(tmp_path):
    path = tmp_path / "flow.yaml"
    path.write_text("method: grid\ncommand: [${env}, ${interpreter}, -m, rag_e2e.cli, train, ${args_no_hyphens}]\n")
    with pytest.raises(RagE2EError, match="block list") as err:
        load_sweep(path)
    assert str(err.value).startswith(f"{path}: not valid YAML") and "\n" not in str(err.value)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(RagE2EError, match=re.escape(f"{tmp_path / 'nope.yaml'}: sweep file not found")):
        load_sweep(tmp_path / "nope.yaml")


def test_bayes_loads_for_wandb_but_the_local_runner_refuses_it(tmp_path):
    path = write(tmp_path, random_sweep() | {"method": "bayes"})
    spec = load_sweep(path)
    with pytest.raises(RagE2EError, match=re.escape(f"{path}: method: bayes search needs the W&B server")):
        expand(spec)


def test_random_needs_run_cap_locally(tmp_path):
    sweep = random_sweep()
    del sweep["run_cap"]
    path = write(tmp_path, sweep)
    with pytest.raises(RagE2EError, match=re.escape(f"{path}: run_cap: required")):
        expand(load_sweep(path))


SHIPPED = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_sweep_loads(path):
    spec = load_sweep(path)
    if spec.method != "bayes":
        points = expand(spec)
        names = run_names(spec, points)
        assert len(set(names)) == len(points) and all(SAFE.fullmatch(n) for n in names)
        for point in points:  # every value composes, not just the names
            compose(point_overrides(point))


def test_run_names_are_unique_and_filesystem_safe(tmp_path):
    sweep = grid()
    sweep["parameters"] = {
        "encoder.seed": {"values": [0, 1]},  # shares its last segment with generator.seed: full keys
        "generator.seed": {"values": [0, 1]},
        "refresh.schedule": {"values": ["0-100:10,100-:50", "0-100:10/100-:50", "500"]},  # slug alike
        "eval.ks": {"values": [[1, 5], [1, 10]]},
        "model.lr": {"values": [1.0e-4, 3.0e-4]},
    }
    spec = load_sweep(write(tmp_path, sweep))
    points = expand(spec)
    names = run_names(spec, points)
    assert len(set(names)) == len(points) == 2 * 2 * 3 * 2 * 2
    assert all(SAFE.fullmatch(n) and len(n) <= 100 for n in names)
    assert names == run_names(spec, expand(spec))
    assert names[0].startswith("encoder.seed0-generator.seed0-schedule_0-100_10_100-_50-")
    assert "ks_1+5-lr0.0001" in names[0]


def test_identical_random_points_get_distinct_names(tmp_path):
    sweep = random_sweep()
    sweep["parameters"] = {"model.loss": {"values": ["sequence", "token"]}}
    spec = load_sweep(write(tmp_path, sweep))
    names = run_names(spec, expand(spec))
    assert len(set(names)) == 8 and "loss_token-2" in names


# ---- the runner, with a stub interpreter ------------------------------------------------------------------------
STUB = """#!{python}
import json, sys
from pathlib import Path
args = sys.argv[1:]
assert args[:3] == ["-m", "rag_e2e.cli", "train"], args
kv = dict(a.split("=", 1) for a in args[3:])
run_dir = Path(kv["run_dir"])
(run_dir / "argv.json").write_text(json.dumps(args[3:]))
print("training", run_dir.name)
if kv.get("retriever.k") == "0":
    print("rag-e2e: error: set `retriever.k` >= 1", file=sys.stderr)
    sys.exit(2)
(run_dir / "metrics.json").write_text(json.dumps({{"test/em": int(kv["retriever.k"]) / 10}}))
"""


@pytest.fixture
def stub_python(tmp_path) -> str:
    path = tmp_path / "stub_python"
    path.write_text(STUB.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_runner_records_failures_goes_on_and_resumes(tmp_path, stub_python):
    sweep = grid()
    sweep["parameters"]["retriever.k"] = {"values": [3, 0, 5]}
    path = write(tmp_path, sweep)
    out = tmp_path / "out"
    summary = run_sweep(path, ["trainer.max_steps=2"], output_dir=out, python=stub_python)

    sweep_dir = out / "sweeps" / "k_and_loss"
    assert summary.sweep_dir == str(sweep_dir) and summary.returncode == 1
    by_name = {run.name: run for run in summary.runs}
    assert len(by_name) == 6
    assert by_name["k3-loss_token"].status == "done" and by_name["k3-loss_token"].metric == pytest.approx(0.3)
    failed = by_name["k0-loss_sequence"]
    assert failed.status == "failed" and failed.returncode == 2 and "retriever.k" in failed.error[-1]
    assert summary.best().name in ("k5-loss_sequence", "k5-loss_token")
    argv = json.loads((sweep_dir / "k5-loss_token" / "argv.json").read_text())
    assert argv == ["experiment=synthetic_demo", "retriever.k=5", "model.loss=token", "logger.group=k_and_loss",
                    "trainer.max_steps=2", f"run_dir={sweep_dir / 'k5-loss_token'}"]
    assert (sweep_dir / "k5-loss_token" / "stdout.log").read_text().splitlines()[-1] == "training k5-loss_token"
    saved = json.loads((sweep_dir / "summary.json").read_text())
    assert saved["returncode"] == 1 and [r["status"] for r in saved["runs"]].count("failed") == 2

    # Run again: finished points are skipped (metric re-read), failed ones are tried again.
    again = run_sweep(path, ["trainer.max_steps=2"], output_dir=out, python=stub_python)
    statuses = {run.name: run.status for run in again.runs}
    assert statuses["k3-loss_token"] == "skipped" and statuses["k0-loss_token"] == "failed"
    assert {run.name: run.metric for run in again.runs} == {run.name: run.metric for run in summary.runs}
    log = (sweep_dir / "k0-loss_token" / "stdout.log").read_text()
    assert log.count("$ ") == 2  # the retry appended to the first attempt's log


def test_runner_rejects_overrides_that_would_collapse_the_sweep(tmp_path, stub_python):
    path = write(tmp_path, grid())
    with pytest.raises(RagE2EError, match="`retriever.k` is swept"):
        run_sweep(path, ["retriever.k=3"], output_dir=tmp_path, python=stub_python)
    with pytest.raises(RagE2EError, match="run_dir"):
        run_sweep(path, ["run_dir=x"], output_dir=tmp_path, python=stub_python)
    with pytest.raises(RagE2EError, match=re.escape(f"{path} with overrides: ") + ".*trainer.max_step"):
        run_sweep(path, ["trainer.max_step=3"], output_dir=tmp_path, python=stub_python)
    assert not (tmp_path / "sweeps").exists()


def test_cmd_sweep_needs_a_file_first():
    with pytest.raises(RagE2EError, match="sweep file"):
        cmd_sweep([])
    with pytest.raises(RagE2EError, match="sweep file"):
        cmd_sweep(["retriever.k=3"])
