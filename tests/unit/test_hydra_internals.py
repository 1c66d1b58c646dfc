"""Hydra's private API as rag_e2e uses it: a Hydra release that moves or changes it fails here, by name."""

import inspect

from hydra.core.override_parser.overrides_parser import OverridesParser

from rag_e2e import hydra_internals as hi


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_the_signatures_we_call_are_there():
    assert _params(hi.run_hydra)[:5] == ["args", "args_parser", "task_function", "config_path", "config_name"]
    assert _params(hi.split_sweep_arguments) == ["overrides", "max_batch_size"]
    # the FileConfigSource methods ExperimentsConfigSource overrides, called by Hydra with these arguments
    for method, params in {"__init__": ["self", "provider", "path"], "load_config": ["self", "config_path"],
                           "is_group": ["self", "config_path"], "is_config": ["self", "config_path"],
                           "available": ["self"], "list": ["self", "config_path", "results_filter"]}.items():
        assert _params(getattr(hi.FileConfigSource, method)) == params, method


def test_a_grid_splits_into_its_points():
    overrides = OverridesParser.create().parse_overrides(["retriever.k=1,5", "model.loss=sequence,token", "seed=3"])
    batches = hi.split_sweep_arguments(overrides, max_batch_size=None)
    points = sorted(tuple(p) for batch in batches for p in batch)
    assert len(points) == 4 and all("seed=3" in p for p in points)
    assert {p[0] for p in points} == {"retriever.k=1", "retriever.k=5"}


def test_the_parser_reads_a_multirun_command_line():
    parsed = hi.get_args_parser().parse_args(["-m", "sweep=ablation_k", "trainer.max_steps=2"])
    assert parsed.multirun and parsed.overrides == ["sweep=ablation_k", "trainer.max_steps=2"]


def test_the_experiments_source_resolves_after_registering():
    from rag_e2e.compose import compose
    from rag_e2e.experiments_source import register

    register()
    register()  # idempotent
    assert compose(["experiment=squad/rag_end2end"]).name  # served from experiments/, not configs/
