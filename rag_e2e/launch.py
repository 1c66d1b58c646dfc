"""`rag-e2e train`: Hydra's command line, run and multirun, over `train()`.

    rag-e2e train experiment=squad/rag_end2end trainer.max_steps=100      one run in hydra.run.dir
    rag-e2e train -m retriever.k=1,5,10 model.loss=sequence,token          a grid (the basic sweeper)
    rag-e2e train -m sweep=optuna_synthetic                                TPE search (hydra-optuna-sweeper)
    rag-e2e train -m sweep=ablation_k hydra/launcher=joblib                parallel local jobs
    rag-e2e train -m sweep=ablation_k hydra/launcher=slurm                 SLURM via submitit (multi-GPU, multi-node)

Before Hydra starts anything, every point of a grid (and the first point of a search) is composed and validated, and
`optimized_metric` is checked against the metrics a run writes: a bad override or a misspelt metric is one error line,
not a failure in the middle of a sweep. Each job trains in Hydra's output directory; a multirun job whose directory
already has metrics.json is not run again (rerunning a sweep with a fixed `hydra.sweep.dir` resumes it).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict, read_write

from rag_e2e.compose import (
    CONFIG_MODULE,
    CONFIG_NAME,
    compose_dict,
    describe,
    parse_overrides,
    register,
    to_run_config,
    to_yaml,
)
from rag_e2e.config import RunConfig
from rag_e2e.errors import ConfigError, RagE2EError
from rag_e2e.eval.metrics import metric_names
from rag_e2e.hydra_internals import get_args_parser, run_hydra, split_sweep_arguments

OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"


# ---- what a run writes, for `optimized_metric` -----------------------------------------------------------------
def written_metrics(run: RunConfig) -> set[str]:
    """The keys of the metrics.json `train()` writes for this config (a test keeps this equal to a real run's)."""
    answers = run.eval.generation_questions != 0
    names = {f"test/{name}" for name in [*metric_names(run.eval.ks, answers), "answered"]}
    if run.eval.before_training and run.trainer.max_steps > 0:
        names |= {f"init/{name}" for name in [*metric_names(run.eval.ks, answers), "answered"]}
    return names | {"time/total_s", "train/steps"}


def check_metric(run: RunConfig) -> None:
    if run.optimized_metric is None:
        return
    written = written_metrics(run)
    if run.optimized_metric not in written:
        raise ConfigError(f"`optimized_metric`={run.optimized_metric} is not a metric this run writes "
                          f"(metrics.json has {', '.join(sorted(written))})")


# ---- checking a command line before Hydra runs it ----------------------------------------------------------------
def _first(override: Override) -> str:
    """One value of a sweep override (a grid's first, a search's lower bound), as an override string."""
    key = override.get_key_element()
    value = override.value()
    if isinstance(value, ChoiceSweep):
        picked = value.list[0]
    elif isinstance(value, RangeSweep | IntervalSweep):
        picked = value.start
    else:
        return f"{key}={override.get_value_element_as_str()}"
    return f"{key}={Override._get_value_element_as_str(picked)}"


def _point_run(overrides: list[str]) -> RunConfig:
    run = to_run_config(compose_dict(overrides), "command line")
    check_metric(run)
    return run


def multirun_base(parsed: list[Override]) -> DictConfig:
    """The config (with its `hydra` node) a multirun composes before it sweeps: each sweep at its first value."""
    return compose_dict([_first(o) for o in parsed], return_hydra_config=True)


def _sweep_base(overrides: list[Override]) -> DictConfig:
    """`multirun_base`, its error naming the [sweeps] extra where a sweeper or launcher plugin is not installed."""
    from rag_e2e.extras import EXTRAS, missing

    try:
        return multirun_base(overrides)
    except ConfigError as err:
        absent = missing(*EXTRAS["sweeps"])
        if not absent:
            raise
        raise ConfigError(f"{err} ({', '.join(absent)} not installed: the Optuna sweeper and the joblib and SLURM "
                          "launchers come with the [sweeps] extra: pip install 'rag_e2e[sweeps]')") from None


def grid_points(overrides: list[str], base: DictConfig) -> list[list[str]]:
    """The basic sweeper's points: its `hydra.sweeper.params`, then the command line (which wins per key)."""
    params = [f"{key}={value}" for key, value in (base.hydra.sweeper.get("params") or {}).items()]
    try:
        batches = split_sweep_arguments(parse_overrides(params + overrides), max_batch_size=None)
    except HydraException as err:
        raise ConfigError(f"command line: {describe(err)}") from None
    return [point for batch in batches for point in batch]


def check_command_line(overrides: list[str], multirun: bool, base: DictConfig | None = None) -> int:
    """Compose and validate what `rag-e2e train [-m] overrides` will run; returns the number of points checked.

    Args:
        base: a multirun's `multirun_base`, if the caller has composed it already.

    Raises:
        ConfigError: one line naming the override, key or metric at fault.
    """
    parsed = parse_overrides(overrides)
    if not multirun:
        sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
        if sweeps:
            raise ConfigError(f"`{sweeps[0]}` sweeps several values: add -m (multirun) to run each")
        _point_run(overrides)
        return 1
    base = base if base is not None else multirun_base(parsed)
    if base.get("run_dir") is not None:
        raise ConfigError("`run_dir` names one run; a multirun puts each job under `hydra.sweep.dir`")
    sweeper = base.hydra.sweeper
    if sweeper.get("_target_") == OPTUNA_SWEEPER:
        params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
        run = _point_run([_first(o) for o in parse_overrides(params)] + [_first(o) for o in parsed])
        if run.optimized_metric is None:
            raise ConfigError("an Optuna sweep minimises or maximises `optimized_metric`; set it (e.g. "
                              "optimized_metric=test/em) and `hydra.sweeper.direction`")
        return 1
    points = grid_points(overrides, base)
    for point in points:
        _point_run(point)
    return len(points)


def dirname_excludes(parsed: list[Override], base: DictConfig) -> str:
    """A multirun job's directory is named by what it sweeps (`retriever.k=5`), not by the command line's constant
    overrides: an override adding those keys to `hydra.job.config.override_dirname.exclude_keys`."""
    keys = list(base.hydra.job.config.override_dirname.exclude_keys)
    keys += [o.key_or_group for o in parsed if not o.is_sweep_override() and o.key_or_group not in keys]
    return "hydra.job.config.override_dirname.exclude_keys=[" + ",".join(f"'{key}'" for key in keys) + "]"


def _same_config(run: RunConfig, run_dir: Path) -> None:
    """A finished job is reused only if it ran this config (a sweep rerun with other constants must not be)."""
    saved = (run_dir / "config.yaml").read_text().splitlines() if (run_dir / "config.yaml").is_file() else []
    wanted = to_yaml(run).splitlines()
    if saved != wanted:
        line = next((a for a, b in zip(wanted, saved) if a != b), "the file")
        raise ConfigError(f"{run_dir}: finished with another config (differs at `{line.strip()}`); set "
                          "`hydra.sweep.dir` to start a new sweep")


# ---- one job ------------------------------------------------------------------------------------------------------
def _read_metric(metrics_path: Path, key: str | None) -> float | None:
    if key is None:
        return None
    metrics = json.loads(metrics_path.read_text())
    if key not in metrics:
        raise ConfigError(f"{metrics_path}: has no `{key}` (optimized_metric)")
    return float(metrics[key])


def _replay_as_single_run(run_dir: Path) -> None:
    """DDP inside a local multirun job: Lightning launches the other ranks by re-running this command with
    `hydra.run.dir`; make that command this job alone (its overrides, no -m) in this job's directory."""
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = str(run_dir)
    sys.argv = [sys.argv[0], "train", *hydra_cfg.overrides.task]


def _task(cfg: DictConfig) -> float | None:
    from rag_e2e.train import train

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
    try:
        run = to_run_config(cfg)
        if multirun and (run_dir / "metrics.json").is_file():
            _same_config(run, run_dir)
            print(f"{run_dir}: finished before (metrics.json), not run again")
            return _read_metric(run_dir / "metrics.json", run.optimized_metric)
        if multirun and run.trainer.devices != 1 and "SLURM_NTASKS" not in os.environ:
            _replay_as_single_run(run_dir)
        metrics_path = train(run)
    except RagE2EError as err:
        print(f"rag-e2e: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"metrics: {metrics_path}")
    return _read_metric(metrics_path, run.optimized_metric)


def main(args: list[str]) -> int:
    """`rag-e2e train <Hydra command line>`; 0 on success, 2 on a config error (one line on stderr)."""
    register()
    parser = get_args_parser()
    parsed = parser.parse_args(args)
    runs = not (parsed.cfg or parsed.help or parsed.hydra_help or parsed.info or parsed.shell_completion)
    checks = runs and os.environ.get("LOCAL_RANK", "0") == "0"  # DDP ranks > 0 replay a command rank 0 checked
    if runs and parsed.multirun:
        overrides = parse_overrides(parsed.overrides)
        base = _sweep_base(overrides)  # composed once, for the checks and the job directory names
        if checks:
            check_command_line(parsed.overrides, multirun=True, base=base)
        parsed.overrides.append(dirname_excludes(overrides, base))
    elif checks:
        check_command_line(parsed.overrides, multirun=False)
    try:
        run_hydra(args=parsed, args_parser=parser, task_function=_task, config_path=f"pkg://{CONFIG_MODULE}",
                   config_name=CONFIG_NAME)
    except SystemExit as done:  # Hydra exits 1 after printing its own errors; _task exits 2 after printing ours
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    else:
        code = 0
    if parsed.help and code == 0:
        print(_all_experiments_help())
    return code


def _all_experiments_help() -> str:
    """Every experiment and sweep by name, nested ones included (Hydra's help above lists a group's top level)."""
    from rag_e2e.compose import config_dir
    from rag_e2e.experiments_source import group_options

    names = group_options(config_dir())
    return ("== Every experiment (experiment=NAME) ==\n" + "\n".join(f"  {n}" for n in names["experiment"]) +
            "\n\n== Every sweep (rag-e2e train -m sweep=NAME) ==\n" + "\n".join(f"  {n}" for n in names["sweep"]))

