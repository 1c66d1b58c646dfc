"""Sweeps: W&B sweep YAML files, validated here and run locally as one `rag-e2e train` subprocess per point.

A sweep file is valid for `wandb sweep <file>` as-is (grid, random or bayes on the W&B server; its `command` ends in
`train ${args_no_hyphens}` so the agent passes our `key=value` overrides). `rag-e2e sweep <file> [overrides...]`
runs grid and random sweeps without a server: each point trains in <output_dir>/sweeps/<sweep>/<run>, a point whose
run directory has metrics.json is skipped, so an interrupted sweep resumes by running the same command again.

    name: retriever_k
    method: grid
    metric: {name: test/em, goal: maximize}
    parameters:
      experiment: {value: synthetic_demo}
      retriever.k: {values: [1, 5, 10]}
    command:
      - ${env}
      - ${interpreter}
      - -m
      - rag_e2e.cli
      - train
      - ${args_no_hyphens}
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import re
import shlex
import subprocess
import sys
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, NoReturn

import yaml

from rag_e2e import atomic
from rag_e2e.compose import compose
from rag_e2e.config import RunConfig
from rag_e2e.errors import ConfigError

# W&B's top-level sweep keys (early_terminate, project and entity only matter to the W&B server).
TOP_LEVEL_KEYS = ("name", "description", "program", "command", "method", "metric", "parameters", "run_cap",
                  "early_terminate", "project", "entity")
METHODS = ("grid", "random", "bayes")
GOALS = ("maximize", "minimize")
# Keys RagLitModule logs (train/*, val/*) or train() writes to metrics.json (init/*, test/*).
LOGGED_METRIC = re.compile(r"(test|val|init|train)/\S+")
DISTRIBUTIONS = ("categorical", "uniform", "int_uniform", "log_uniform_values")
PARAM_KEYS = ("value", "values", "distribution", "min", "max")
ARGS_MACRO = "${args_no_hyphens}"  # the agent passes `key=value`; plain ${args} would pass `--key=value`
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
MAX_NAME = 100
TAIL_LINES = 20


def _fail(path: Path, key: str, problem: str) -> NoReturn:
    raise ConfigError(f"{path}: {key}: {problem}")


@dataclass(frozen=True)
class Param:
    """One swept override: a constant, a list to pick from, or a distribution between bounds."""

    key: str  # the override key: `retriever.k`, or a group such as `experiment`
    values: tuple = ()  # `value` as one item, or `values` (also `distribution: categorical`); empty for bounds
    distribution: Literal["uniform", "int_uniform", "log_uniform_values"] | None = None
    low: float | None = None
    high: float | None = None

    @property
    def varies(self) -> bool:
        return self.distribution is not None or len(self.values) > 1


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file."""

    path: Path
    name: str  # filesystem-safe: the sweep folder and the W&B group
    method: Literal["grid", "random", "bayes"]
    metric: str  # e.g. test/em
    goal: Literal["maximize", "minimize"]
    parameters: tuple[Param, ...]  # in file order
    run_cap: int | None


# ---- loading -------------------------------------------------------------------------------------------------------
def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a W&B sweep file.

    Args:
        path: the sweep YAML.

    Returns:
        The SweepSpec; parameter keys are checked by composing one point of the sweep.

    Raises:
        ConfigError: one line, `<file>: <key path>: <problem>`.
    """
    path = Path(path)
    raw = _read(path)
    unknown = [str(key) for key in raw if key not in TOP_LEVEL_KEYS]
    if unknown:
        _fail(path, unknown[0], f"unknown top-level key (W&B sweep keys: {', '.join(TOP_LEVEL_KEYS)})")
    method = raw.get("method")
    if method not in METHODS:
        _fail(path, "method", f"{'missing' if method is None else f'`{method}` is unknown'}; set grid, random or bayes")
    metric, goal = _metric(path, raw.get("metric"))
    _check_command(path, raw.get("program"), raw.get("command"))
    spec = SweepSpec(path=path, name=_sweep_name(path, raw.get("name")), method=method, metric=metric, goal=goal,
                     parameters=_parameters(path, raw.get("parameters"), method),
                     run_cap=_run_cap(path, raw.get("run_cap")))
    probe = {p.key: p.values[0] if p.values else p.low for p in spec.parameters}
    try:
        compose(point_overrides(probe))
    except ConfigError as err:
        _fail(path, "parameters", str(err).removeprefix("command line: "))
    return spec


def _read(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: sweep file not found")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        # A common slip: in a flow list `[${env}, ...]` YAML reads `{` as the start of a mapping.
        hint = "; write `command` as a block list (`- ${env}`)" if "${" in text else ""
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}{hint}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def _metric(path: Path, metric: object) -> tuple[str, str]:
    if not isinstance(metric, dict):
        _fail(path, "metric", "expected a mapping such as {name: test/em, goal: maximize}")
    extra = [str(key) for key in metric if key not in ("name", "goal", "target")]
    if extra:
        _fail(path, f"metric.{extra[0]}", "unknown key (allowed: name, goal, target)")
    name, goal = metric.get("name"), metric.get("goal")
    if not isinstance(name, str) or not LOGGED_METRIC.fullmatch(name):
        _fail(path, "metric.name", f"`{name}` is not a logged key; use test/*, val/*, init/* or train/* (e.g. test/em)")
    if goal not in GOALS:
        _fail(path, "metric.goal", f"`{goal}` is not maximize or minimize")
    return name, goal


def _check_command(path: Path, program: object, command: object) -> None:
    if program is not None and not isinstance(program, str):
        _fail(path, "program", "expected a string")
    if command is None:
        # W&B's default command is `${env} ${interpreter} ${program} ${args}`: `--key=value`, which our CLI rejects.
        _fail(path, "command", f"required (W&B's default passes `--key=value`); use [${{env}}, ${{interpreter}}, -m, "
                               f"rag_e2e.cli, train, {ARGS_MACRO}] as a block list")
    if not isinstance(command, list) or not all(isinstance(item, str) for item in command):
        _fail(path, "command", "expected a list of strings")
    if "train" not in command or ARGS_MACRO not in command:
        _fail(path, "command", f"must run `train` with `{ARGS_MACRO}` (our overrides are key=value)")
    if "${program}" in command and program is None:
        _fail(path, "program", "missing, but `command` uses ${program}")


def _sweep_name(path: Path, name: object) -> str:
    if name is not None and not isinstance(name, str):
        _fail(path, "name", "expected a string")
    slug = _slug(name or path.stem)
    if not slug:
        _fail(path, "name", f"`{name}` has no letters or digits to name the sweep folder")
    return slug


def _run_cap(path: Path, run_cap: object) -> int | None:
    if run_cap is not None and (isinstance(run_cap, bool) or not isinstance(run_cap, int) or run_cap < 1):
        _fail(path, "run_cap", f"`{run_cap}` is not a positive integer")
    return run_cap


def _parameters(path: Path, params: object, method: str) -> tuple[Param, ...]:
    if not isinstance(params, dict) or not params:
        _fail(path, "parameters", "missing or empty; map override keys to {value: x}, {values: [...]} or a "
                                  "distribution")
    out = []
    for key, entry in params.items():
        where = f"parameters.{key}"
        if not isinstance(key, str) or not key:
            _fail(path, where, "parameter names are override keys such as `retriever.k`")
        if key == "run_dir":
            _fail(path, where, "the sweep sets each run's run_dir (<output_dir>/sweeps/<sweep>/<run>)")
        param = _param(path, where, key, entry)
        if method == "grid" and param.distribution:
            _fail(path, where, f"a grid takes `value` or `values`, not `distribution: {param.distribution}` "
                               "(list the values, or use method: random)")
        out.append(param)
    return tuple(out)


def _param(path: Path, where: str, key: str, entry: object) -> Param:
    if not isinstance(entry, dict):
        _fail(path, where, "expected a mapping: {value: x}, {values: [...]} or {distribution: d, min: a, max: b}")
    if "parameters" in entry:
        _fail(path, f"{where}.parameters", "nested parameters are not supported; use dotted keys (`retriever.k`)")
    unknown = [str(k) for k in entry if k not in PARAM_KEYS]
    if unknown:
        _fail(path, f"{where}.{unknown[0]}", f"unknown key (supported: {', '.join(PARAM_KEYS)})")
    dist = entry.get("distribution")
    if "value" in entry:
        if len(entry) > 1:
            _fail(path, where, "`value` excludes `values`, `distribution`, `min` and `max`")
        return Param(key, values=(_item(path, f"{where}.value", entry["value"]),))
    if dist in (None, "categorical"):
        if "min" in entry or "max" in entry:
            _fail(path, where, "`min`/`max` need `distribution: uniform`, `int_uniform` or `log_uniform_values`")
        if "values" not in entry:
            _fail(path, where, "set one of `value`, `values` or `distribution`")
        return Param(key, values=_values(path, f"{where}.values", entry["values"]))
    if dist not in DISTRIBUTIONS:
        _fail(path, f"{where}.distribution", f"`{dist}` is not supported (use {', '.join(DISTRIBUTIONS)})")
    if "values" in entry:
        _fail(path, where, f"`values` goes with `distribution: categorical`, not `{dist}`")
    low, high = (_bound(path, f"{where}.{side}", entry.get(side), dist == "int_uniform") for side in ("min", "max"))
    if not low < high:
        _fail(path, where, f"needs min < max (got {low} and {high})")
    if dist == "log_uniform_values" and low <= 0:
        _fail(path, f"{where}.min", "log_uniform_values needs min > 0")
    return Param(key, distribution=dist, low=low, high=high)


def _values(path: Path, where: str, values: object) -> tuple:
    if not isinstance(values, list) or not values:
        _fail(path, where, "expected a non-empty list")
    items = tuple(_item(path, where, value) for value in values)
    seen = Counter(json.dumps(item) for item in items)
    twice = [text for text, n in seen.items() if n > 1]
    if twice:
        _fail(path, where, f"lists {twice[0]} twice")
    return items


def _item(path: Path, where: str, value: object) -> object:
    scalar = (str, int, float, bool, type(None))
    if isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value)):
        return value
    _fail(path, where, f"`{value}` is not a scalar or a list of scalars")


def _bound(path: Path, where: str, value: object, integer: bool) -> float:
    if isinstance(value, str):
        # PyYAML follows YAML 1.1: `1e-4` without a dot is a string.
        _fail(path, where, f"`{value}` is a string, not a number (write floats like 1.0e-4)")
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        _fail(path, where, "missing or not a number")
    if integer and not isinstance(value, int):
        _fail(path, where, f"int_uniform needs integer bounds, got {value}")
    return value


# ---- points and run names ------------------------------------------------------------------------------------------
def expand(spec: SweepSpec, seed: int = 0) -> list[dict[str, object]]:
    """The sweep's points for the local runner, each `{override key: value}` in file order.

    Grid: the cartesian product (the first parameter varies slowest), cut at `run_cap` if set. Random: `run_cap`
    samples drawn in order from one seeded generator, so a larger `run_cap` extends the same sequence.

    Raises:
        ConfigError: for bayes (W&B server only) and for random without `run_cap`.
    """
    if spec.method == "bayes":
        _fail(spec.path, "method", "bayes search needs the W&B server (`wandb sweep <file>`, then `wandb agent "
                                   "<id>`); the local runner does grid and random")
    keys = [p.key for p in spec.parameters]
    if spec.method == "grid":
        points = [dict(zip(keys, combo)) for combo in itertools.product(*(p.values for p in spec.parameters))]
        return points[: spec.run_cap] if spec.run_cap else points
    if spec.run_cap is None:
        _fail(spec.path, "run_cap", "required for method random with the local runner (the number of runs)")
    rng = random.Random(seed)
    return [{p.key: _sample(p, rng) for p in spec.parameters} for _ in range(spec.run_cap)]


def _sample(param: Param, rng: random.Random) -> object:
    if param.distribution is None:
        return param.values[0] if len(param.values) == 1 else rng.choice(param.values)
    if param.distribution == "int_uniform":
        return rng.randint(param.low, param.high)
    if param.distribution == "uniform":
        value = rng.uniform(param.low, param.high)
    else:
        value = math.exp(rng.uniform(math.log(param.low), math.log(param.high)))
    # Six significant digits keep configs and logs readable; rounding must not leave the bounds.
    return min(max(float(f"{value:.6g}"), param.low), param.high)


def point_overrides(point: dict[str, object]) -> list[str]:
    """`key=value` overrides for one point, in the syntax `rag-e2e train` parses (`true`, `null`, `[1,5]`)."""
    return [f"{key}={_override_value(value)}" for key, value in point.items()]


def _override_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(_override_value(item) for item in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def run_names(spec: SweepSpec, points: list[dict[str, object]]) -> list[str]:
    """Deterministic, unique, filesystem-safe names from the varying parameters: `k5-loss_token`.

    A parameter is labelled by its last key segment (`retriever.k` -> `k`) unless two varying keys share it. Names
    that still collide (values that slug alike) get a digest of the point; identical points get `-2`, `-3`, ...
    """
    varying = [p.key for p in spec.parameters if p.varies]
    short = Counter(key.rsplit(".", 1)[-1] for key in varying)
    labels = {key: key.rsplit(".", 1)[-1] if short[key.rsplit(".", 1)[-1]] == 1 else key for key in varying}
    names = [_slug("-".join(_label(labels[key], point[key]) for key in varying)) or "run" for point in points]
    distinct: dict[str, set[str]] = {}
    for name, point in zip(names, points):
        distinct.setdefault(name, set()).add(_digest(point))
    names = [f"{name}-{_digest(point)}" if len(distinct[name]) > 1 else name for name, point in zip(names, points)]
    seen: Counter[str] = Counter()
    unique = []
    for name in names:
        seen[name] += 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return unique


def _label(label: str, value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{label}{value:.3g}" if isinstance(value, float) else f"{label}{value}"
    text = "+".join(map(_override_value, value)) if isinstance(value, list) else _override_value(value)
    return f"{label}_{text}"


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._+-")
    if len(slug) > MAX_NAME:
        slug = f"{slug[: MAX_NAME - 9]}-{hashlib.sha1(slug.encode()).hexdigest()[:8]}"
    return slug


def _digest(point: dict[str, object]) -> str:
    return hashlib.sha1(json.dumps(point, sort_keys=True).encode()).hexdigest()[:6]


# ---- running -------------------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    """One point of a sweep after the runner has seen it."""

    name: str
    run_dir: str
    params: dict[str, object]
    status: Literal["done", "skipped", "failed"]  # skipped: metrics.json was already there
    metric: float | None = None  # the sweep metric from metrics.json (None if absent there, e.g. val/*)
    returncode: int | None = None  # None when skipped
    seconds: float = 0.0
    error: list[str] = field(default_factory=list)  # failed: the last lines of stdout.log


@dataclass
class SweepSummary:
    """What `run_sweep` did; saved as <sweep dir>/summary.json."""

    name: str
    file: str
    sweep_dir: str
    metric: str
    goal: str
    runs: list[RunResult] = field(default_factory=list)

    @property
    def returncode(self) -> int:
        """0 if every run finished (now or before), 1 if any failed."""
        return int(any(run.status == "failed" for run in self.runs))

    def best(self) -> RunResult | None:
        """The finished run with the best metric, or None if no run has it."""
        scored = [run for run in self.runs if run.metric is not None]
        sign = 1 if self.goal == "maximize" else -1
        return max(scored, key=lambda run: sign * run.metric, default=None)


def run_sweep(path: str | Path, extra_overrides: list[str], *, output_dir: Path | None = None,
              python: str = sys.executable, seed: int = 0) -> SweepSummary:
    """Train every point of a grid or random sweep, one subprocess at a time; resumable.

    Each run is `python -m rag_e2e.cli train <point> logger.group=<sweep> <extra_overrides> run_dir=<run dir>`,
    with its output in <run dir>/stdout.log. A point whose run dir has metrics.json is skipped; a failing run is
    recorded and the sweep goes on. <sweep dir>/summary.json is rewritten after every run.

    Args:
        path: the sweep file.
        extra_overrides: appended to every run's overrides (e.g. smaller models); may not set a swept key.
        output_dir: root of <output_dir>/sweeps/<sweep>; defaults to the composed config's `output_dir`.
        python: the interpreter that runs `rag_e2e.cli`.
        seed: the random sweep's sampling seed (the same seed gives the same points and run names).

    Returns:
        The SweepSummary (its `returncode` is 1 if any run failed).

    Raises:
        ConfigError: an invalid sweep file or extra override, before anything runs.
    """
    spec = load_sweep(path)
    points = expand(spec, seed)
    extras = list(extra_overrides)
    base = _check_extras(spec, points[0], extras)
    sweep_dir = Path(output_dir if output_dir is not None else base.output_dir) / "sweeps" / spec.name
    summary = SweepSummary(name=spec.name, file=str(spec.path), sweep_dir=str(sweep_dir), metric=spec.metric,
                           goal=spec.goal)
    names = run_names(spec, points)
    for i, (name, point) in enumerate(zip(names, points), 1):
        print(f"[{i}/{len(points)}] {name}: ", end="", flush=True)
        run = _run_point(spec, name, point, sweep_dir / name, extras, python)
        print(run.status if run.status != "failed" else f"failed ({run.error[-1] if run.error else run.returncode})")
        summary.runs.append(run)
        _write_summary(sweep_dir / "summary.json", summary)
    _print_table(summary)
    return summary


def _check_extras(spec: SweepSpec, point: dict[str, object], extras: list[str]) -> RunConfig:
    swept = {p.key for p in spec.parameters if p.varies}
    for item in extras:
        key = item.split("=", 1)[0]
        if key == "run_dir":
            raise ConfigError(f"override `{item}`: the sweep sets each run's run_dir; set `output_dir` instead")
        if key in swept:
            raise ConfigError(f"override `{item}`: `{key}` is swept by {spec.path}; it would make every run the same")
    try:
        return compose(point_overrides(point) + extras)
    except ConfigError as err:
        raise ConfigError(f"{spec.path} with overrides: {err}") from None


def _run_point(spec: SweepSpec, name: str, point: dict[str, object], run_dir: Path, extras: list[str],
               python: str) -> RunResult:
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        return RunResult(name, str(run_dir), point, "skipped", metric=_read_metric(metrics_path, spec.metric))
    run_dir.mkdir(parents=True, exist_ok=True)
    # A run dir without metrics.json is resumed by train() from checkpoints/last.ckpt if there is one.
    cmd = [python, "-m", "rag_e2e.cli", "train", *point_overrides(point), f"logger.group={spec.name}", *extras,
           f"run_dir={run_dir}"]
    log_path = run_dir / "stdout.log"
    print(f"training, log in {log_path} ... ", end="", flush=True)
    started = time.monotonic()
    env = os.environ | {"PYTHONUNBUFFERED": "1"}  # stdout and stderr interleave in the log as they happened
    with log_path.open("a") as log:  # append: a resumed run keeps the earlier attempt's log
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        returncode = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env).returncode
    seconds = round(time.monotonic() - started, 1)
    if returncode == 0 and metrics_path.is_file():
        return RunResult(name, str(run_dir), point, "done", metric=_read_metric(metrics_path, spec.metric),
                         returncode=0, seconds=seconds)
    error = _tail(log_path) if returncode != 0 else [f"exited 0 but wrote no {metrics_path}"]
    return RunResult(name, str(run_dir), point, "failed", returncode=returncode, seconds=seconds, error=error)


def _read_metric(metrics_path: Path, key: str) -> float | None:
    try:
        value = json.loads(metrics_path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None


def _tail(log_path: Path) -> list[str]:
    with log_path.open(errors="replace") as log:
        lines = deque((line.rstrip() for line in log if line.strip()), maxlen=TAIL_LINES)
    return list(lines)


def _write_summary(path: Path, summary: SweepSummary) -> None:
    data = asdict(summary) | {"returncode": summary.returncode}
    atomic.write_text(path, json.dumps(data, indent=2) + "\n")  # readers never see a half-written summary


def _print_table(summary: SweepSummary) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sweep {summary.name}: {summary.sweep_dir}")
    for column in ("run", "status", summary.metric, "seconds", "note"):
        table.add_column(column, overflow="fold")
    best = summary.best()
    for run in summary.runs:
        metric = "" if run.metric is None else f"{run.metric:.4f}" + (" *" if run is best else "")
        note = run.error[-1] if run.error else ""
        table.add_row(run.name, run.status, metric, f"{run.seconds:.0f}" if run.returncode is not None else "", note)
    Console().print(table)


def cmd_sweep(args: list[str]) -> int:
    """`rag-e2e sweep <file> [overrides...]`: run a grid or random sweep locally; 1 if any run failed."""
    if not args or "=" in args[0]:
        raise ConfigError("rag-e2e sweep needs a sweep file first: rag-e2e sweep experiments/sweeps/<name>.yaml "
                          "[overrides...]")
    return run_sweep(args[0], args[1:]).returncode
