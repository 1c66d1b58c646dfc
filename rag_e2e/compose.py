"""Compose a RunConfig from the YAML groups in `configs/` and command-line overrides.

A small, Hydra-like composition on OmegaConf (Hydra 1.3 pins OmegaConf < 2.4, which lacks `Literal` fields):

    configs/config.yaml          `defaults:` maps each group to its default file, plus top-level values
    configs/<group>/<name>.yaml  values for the `<group>` key (e.g. configs/trainer/cpu.yaml fills `trainer`)
    configs/experiment/<n>.yaml  global values; its own `defaults:` picks group files (e.g. `data: squad`);
                                 `experiment=path/to/file.yaml` loads an experiment file from anywhere

Overrides: `group=name` picks a group file (`experiment=squad_open`, `data=squad`); `a.b=value` sets a key.
Precedence, lowest first: schema defaults < group files < config.yaml < experiment < `a.b=value`.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rag_e2e.config import RunConfig
from rag_e2e.errors import ConfigError


def config_dir() -> Path:
    """The shipped `configs/` folder (installed as the package `rag_e2e.configs`)."""
    return Path(str(importlib.resources.files("rag_e2e.configs")))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _groups(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.yaml"))}


def _split_overrides(overrides: list[str], groups: set[str]) -> tuple[dict[str, str | None], list[str]]:
    choices: dict[str, str | None] = {}
    keys: list[str] = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, value = item.split("=", 1)
        if key in groups:
            choices[key] = None if value in ("null", "") else value
        else:
            keys.append(item)
    return choices, keys


def _group_path(root: Path, group: str, choice: str) -> Path:
    # An experiment may also be a YAML file anywhere (experiments/squad/rag_end2end.yaml), not only a shipped name.
    if group == "experiment" and choice.endswith((".yaml", ".yml")):
        return Path(choice)
    return root / group / f"{choice}.yaml"


def _load_group(root: Path, group: str, choice: str) -> dict:
    path = _group_path(root, group, choice)
    if group == "experiment" and path.suffix in (".yaml", ".yml") and path.parent != root / group:
        if not path.is_file():
            raise ConfigError(f"no experiment file {path}")
        return _read_yaml(path)
    if not path.is_file():
        options = ", ".join(sorted(p.stem for p in (root / group).glob("*.yaml")))
        raise ConfigError(f"no config '{group}={choice}': {path} does not exist (options: {options})")
    return _read_yaml(path)


def _merge(base: DictConfig, values: dict | DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, values)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{source}: {_describe(err)}") from None


def _describe(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    if type(err).__name__ == "ConfigKeyError" and key:
        return f"unknown key `{key}` ({first})"
    return f"`{key}`: {first}" if key else first


def compose(overrides: list[str] | None = None, root: Path | None = None) -> RunConfig:
    """Build and validate the run config.

    Args:
        overrides: command-line items, `group=name` or `dotted.key=value`.
        root: the configs folder; defaults to the shipped one.

    Returns:
        A validated RunConfig (dataclass instances all the way down).

    Raises:
        ConfigError: unknown key, wrong type, missing group file or invalid value, naming the key.
    """
    root = root or config_dir()
    top = _read_yaml(root / "config.yaml")
    choices: dict[str, str | None] = dict(top.pop("defaults", {}) or {})
    cli_choices, cli_keys = _split_overrides(list(overrides or []), _groups(root))
    choices.update(cli_choices)

    experiment: dict = {}
    if choices.get("experiment"):
        experiment = _load_group(root, "experiment", choices["experiment"])
        choices.update(experiment.pop("defaults", {}) or {})
        choices.update(cli_choices)  # the command line wins over the experiment's picks

    cfg = OmegaConf.structured(RunConfig)
    for group, choice in choices.items():
        if group == "experiment" or choice is None:
            continue
        cfg = _merge(cfg, {group: _load_group(root, group, choice)}, f"configs/{group}/{choice}.yaml")
    cfg = _merge(cfg, top, "configs/config.yaml")
    if experiment:
        cfg = _merge(cfg, experiment, str(_group_path(root, "experiment", choices["experiment"])))
    try:
        dotlist = OmegaConf.from_dotlist(cli_keys)
    except OmegaConfBaseException as err:
        raise ConfigError(f"command line: {_describe(err)}") from None
    cfg = _merge(cfg, dotlist, "command line")
    try:
        run = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"config: {_describe(err)}") from None
    assert isinstance(run, RunConfig)
    return run


def to_yaml(run: RunConfig) -> str:
    """The resolved config as YAML (saved as `config.yaml` in each run directory)."""
    return OmegaConf.to_yaml(OmegaConf.structured(run))


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Re-load a saved `config.yaml` (from a run directory) with optional `a.b=value` overrides."""
    path = Path(path)
    cfg = _merge(OmegaConf.structured(RunConfig), _read_yaml(path), str(path))
    _, keys = _split_overrides(list(overrides or []), set())
    cfg = _merge(cfg, OmegaConf.from_dotlist(keys), "command line")
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}: {_describe(err)}") from None


def split_options(args: list[str], defaults: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """A script's own `key=value` options (those named in `defaults`) apart from the config overrides."""
    opts, overrides = dict(defaults), []
    for arg in args:
        key, _, value = arg.partition("=")
        if key in opts:
            opts[key] = value
        else:
            overrides.append(arg)
    return opts, overrides
