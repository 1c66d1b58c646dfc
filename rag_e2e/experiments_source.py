"""A Hydra config source that serves the repository's `experiments/` folder as the `experiment` and `sweep` groups.

`experiment=squad/rag_end2end` then finds `experiments/squad/rag_end2end.yaml` from any working directory, beside
the shipped `configs/experiment/*.yaml`; `sweep=ablation_k` finds `experiments/sweeps/ablation_k.yaml` beside
`configs/sweep/*.yaml`. Other groups are not served from here. The folder is the one beside the `rag_e2e` package
(a source checkout or an editable install), or `$RAG_E2E_EXPERIMENTS`.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigResult

from rag_e2e.hydra_internals import FileConfigSource, register_source

SCHEME = "rag-e2e-experiments"
SEARCH_PATH = f"{SCHEME}://experiments"  # the path part is a label; the folder is found by `experiments_root`
_GROUPS = {"experiment": "", "sweep": "sweeps"}  # group -> folder under experiments/
_NOWHERE = "__not_served_here__"


def experiments_root() -> Path:
    env = os.environ.get("RAG_E2E_EXPERIMENTS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "experiments"


class ExperimentsConfigSource(FileConfigSource):
    def __init__(self, provider: str, path: str) -> None:
        super().__init__(provider, path)
        self.path = str(experiments_root())

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def _local(self, config_path: str) -> str:
        """`experiment/squad/x` -> `squad/x`, `sweep/a` -> `sweeps/a`; anything else is not here."""
        group, _, rest = config_path.strip("/").partition("/")
        if config_path.strip("/") == "":
            return ""
        if group not in _GROUPS or (group == "experiment" and rest.split("/")[0] == "sweeps"):
            return _NOWHERE
        return "/".join(part for part in (_GROUPS[group], rest) if part)

    def load_config(self, config_path: str) -> ConfigResult:
        return super().load_config(self._local(config_path))

    def is_group(self, config_path: str) -> bool:
        return super().is_group(self._local(config_path))

    def is_config(self, config_path: str) -> bool:
        return bool(config_path.strip("/")) and super().is_config(self._local(config_path))

    def available(self) -> bool:
        return os.path.isdir(self.path)

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        local = self._local(config_path)
        if config_path.strip("/") == "":
            return sorted(group for group in _GROUPS if self.is_group(group))
        folder = os.path.join(self.path, local)
        if not os.path.isdir(folder):
            return []
        files: list[str] = []
        for name in os.listdir(folder):
            # sweeps/ is the sweep group, not experiments named sweeps/<x>
            if not (config_path.strip("/") == "experiment" and name == "sweeps"):
                self._list_add_result(files, f"{config_path.strip('/')}/{name}", name, results_filter)
        return sorted(set(files))


def group_options(configs_dir: Path) -> dict[str, list[str]]:
    """Every `experiment=` and `sweep=` name, nested ones included (`squad/rag_end2end`), from the shipped configs
    and `experiments/`; Hydra's own --help lists only a group's top level."""
    roots = {"experiment": [configs_dir / "experiment", experiments_root()],
             "sweep": [configs_dir / "sweep", experiments_root() / "sweeps"]}
    names: dict[str, list[str]] = {}
    for group, folders in roots.items():
        found = set()
        for folder in folders:
            for file in folder.rglob("*.yaml") if folder.is_dir() else ():
                name = file.relative_to(folder).with_suffix("").as_posix()
                nested_sweep = group == "experiment" and folder == experiments_root() and name.startswith("sweeps/")
                if not nested_sweep and _is_hydra_config(file):  # not experiments/wandb/'s W&B sweep specs
                    found.add(name)
        names[group] = sorted(found)
    return names


def _is_hydra_config(file: Path) -> bool:
    with open(file, encoding="utf-8") as f:
        return any(line.startswith("# @package _global_") for line, _ in zip(f, range(5)))


def register() -> None:
    """Make the `rag-e2e-experiments://` scheme known to Hydra (idempotent)."""
    register_source(ExperimentsConfigSource)
