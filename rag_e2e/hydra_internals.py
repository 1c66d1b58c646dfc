"""The parts of Hydra's private API (`hydra._internal`) this project uses, in one place.

Hydra has no public way to run its command line over our own config package, to split a sweep into its points, or to
register a config source, so these come from `hydra._internal`. Any Hydra release may move them: the imports fail
here first, and tests/unit/test_hydra_internals.py checks the signatures we call them with.

    get_args_parser, run_hydra     `rag-e2e train` is Hydra's command line (rag_e2e/launch.py)
    split_sweep_arguments          the basic sweeper's grid points, to validate each before a sweep starts
    FileConfigSource, register_source
                                   the experiments/ folder served as the `experiment` and `sweep` groups
                                   (rag_e2e/experiments_source.py)
"""

from __future__ import annotations

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.core_plugins.file_config_source import FileConfigSource
from hydra._internal.sources_registry import SourcesRegistry
from hydra._internal.utils import _run_hydra as run_hydra
from hydra._internal.utils import get_args_parser

split_sweep_arguments = BasicSweeper.split_arguments


def register_source(source: type[FileConfigSource]) -> None:
    """Make `source.scheme()` a config-source scheme Hydra knows (idempotent)."""
    SourcesRegistry.instance().register(source)


__all__ = ["FileConfigSource", "get_args_parser", "register_source", "run_hydra", "split_sweep_arguments"]
