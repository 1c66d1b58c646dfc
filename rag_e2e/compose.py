"""Hydra composes every run: the dataclass schema in Hydra's ConfigStore, YAML groups in `configs/`, experiments.

    configs/config.yaml          the primary config: a defaults list (one file per group), top-level values and the
                                 `hydra:` run/sweep directories
    configs/<group>/<name>.yaml  values for the `<group>` key (e.g. configs/trainer/cpu.yaml fills `trainer`)
    configs/experiment/, experiments/   `experiment=<name>` (global package; `override /group: name` in defaults)
    configs/sweep/, experiments/sweeps/ `-m sweep=<name>`: a multirun's swept parameters, sweeper and launcher

Overrides are Hydra's: `group=name` picks a group file, `a.b=value` sets a key. Precedence, lowest first:
schema defaults < group files < config.yaml < experiment < command line. This module turns a composed DictConfig
into a validated RunConfig and every failure into one ConfigError line naming the key.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rag_e2e import experiments_source
from rag_e2e.config import RunConfig
from rag_e2e.errors import ConfigError

CONFIG_MODULE = "rag_e2e.configs"  # configs/ installs as this package
CONFIG_NAME = "config"
SCHEMA_NAME = "rag_e2e_schema"  # the first entry of configs/config.yaml's defaults list
MAX_DIR_NAME = 120


def _first_non_null(*values):
    return next((value for value in values if value is not None), None)


def _slug(text: str) -> str:
    """A multirun job's folder from its overrides (`experiment=squad/x,retriever.k=5`): one level, no slashes, at
    most MAX_DIR_NAME characters (a long one keeps its start and a digest of the whole)."""
    slug = re.sub(r"[^A-Za-z0-9._,=+@-]+", "_", text).strip("_") or "run"
    if len(slug) > MAX_DIR_NAME:
        slug = f"{slug[: MAX_DIR_NAME - 9]}-{hashlib.sha1(slug.encode()).hexdigest()[:8]}"
    return slug


def register() -> None:
    """The schema, the experiments folder and our resolvers, known to Hydra (idempotent; before any compose)."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=RunConfig)
    experiments_source.register()
    for name, resolver in (("rag_e2e.or", _first_non_null), ("rag_e2e.slug", _slug)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def config_dir() -> Path:
    """The shipped `configs/` folder."""
    import importlib.resources

    return Path(str(importlib.resources.files(CONFIG_MODULE)))


def describe(err: Exception) -> str:
    """One line for a Hydra or OmegaConf error, naming the key where there is one."""
    inner = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException | ConfigError) else err
    if isinstance(inner, ConfigError):
        return str(inner)
    key = getattr(inner, "full_key", None) if isinstance(inner, OmegaConfBaseException) else None
    if key:
        reason = str(inner).splitlines()[0]
        if type(inner).__name__ == "ConfigKeyError" or "not in" in reason:
            return f"unknown key `{key}` ({reason})"
        return f"`{key}`: {reason}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = " ".join(lines)
    missing = re.search(r"Could not find '([^']+)'", text)
    group = re.search(r"Available options in '([^']+)':(.*?)(Config search path|$)", text)
    if missing and group:  # a group file not found: name the override and list the options
        choice = missing.group(1).removeprefix(group.group(1) + "/")
        options = ", ".join(group.group(2).split())
        return f"no config `{group.group(1)}={choice}` (available: {options})"
    return lines[0] if lines else type(err).__name__


def to_run_config(cfg: DictConfig, source: str = "config") -> RunConfig:
    """A composed DictConfig (no `hydra` node) as the validated RunConfig; `__post_init__` checks run here."""
    try:
        run = OmegaConf.to_object(cfg)
    except (OmegaConfBaseException, HydraException) as err:
        raise ConfigError(f"{source}: {describe(err)}") from None
    if not isinstance(run, RunConfig):
        raise ConfigError(f"{source}: did not compose to a RunConfig (is `{SCHEMA_NAME}` first in the defaults?)")
    return run


def parse_overrides(overrides: list[str]) -> list[Override]:
    """Hydra's parse of command-line overrides; a malformed one is one error naming it."""
    parser, parsed = OverridesParser.create(), []
    for item in overrides:
        if "=" not in item.lstrip("+~") and not item.startswith("~"):  # `~key` deletes and takes no value
            raise ConfigError(f"override '{item}' is not of the form key=value")
        try:
            parsed += parser.parse_overrides([item])
        except HydraException as err:
            reason = " ".join(str(err).split()).removeprefix(f"Error parsing override '{item}' ")
            raise ConfigError(f"command line: cannot parse override `{item}` ({reason})") from None
    return parsed


def compose_dict(overrides: list[str] | None = None, return_hydra_config: bool = False) -> DictConfig:
    """Hydra's composition of the shipped configs with `overrides` (no sweep syntax), errors as ConfigError."""
    register()
    overrides = list(overrides or [])
    parse_overrides(overrides)
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return hydra_compose(CONFIG_NAME, overrides=overrides, return_hydra_config=return_hydra_config)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise ConfigError(f"command line: {describe(err)}") from None


def compose(overrides: list[str] | None = None) -> RunConfig:
    """Build and validate the run config.

    Args:
        overrides: command-line items, `group=name` or `dotted.key=value`.

    Returns:
        A validated RunConfig (dataclass instances all the way down).

    Raises:
        ConfigError: unknown key, wrong type, missing group file or invalid value, naming the key.
    """
    return to_run_config(compose_dict(overrides))


def to_yaml(run: RunConfig) -> str:
    """The resolved config as YAML (saved as `config.yaml` in each run directory)."""
    return OmegaConf.to_yaml(OmegaConf.structured(run))


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Re-load a saved `config.yaml` (from a run directory) with optional `a.b=value` overrides."""
    path = Path(path)
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.load(path))
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides or [])))
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}: {describe(err)}") from None
    except Exception as err:  # yaml.YAMLError and the like: the file itself is broken
        raise ConfigError(f"{path}: not a valid config: {' '.join(str(err).split())}") from None
    return to_run_config(cfg, str(path))


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
