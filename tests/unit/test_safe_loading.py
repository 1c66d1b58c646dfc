"""Every `torch.load` in the package, benchmarks and experiments included, refuses pickled code (weights_only)."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _unsafe_loads(source: str) -> list[int]:
    """Lines of `torch.load(...)` calls without `weights_only=True`."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
            safe = any(kw.arg == "weights_only" and isinstance(kw.value, ast.Constant) and kw.value.value is True
                       for kw in node.keywords)
            if not safe:
                lines.append(node.lineno)
    return lines


def test_the_checker_sees_an_unsafe_call():
    assert _unsafe_loads("import torch\ntorch.load(p)\ntorch.load(p, weights_only=True)\n") == [2]
    assert _unsafe_loads("torch.load(p, weights_only=False)\n") == [1]


def test_no_torch_load_in_the_package_can_unpickle_code():
    found = {}
    for folder in ("rag_e2e", "kernels", "experiments"):
        for path in (REPO / folder).rglob("*.py"):
            bad = _unsafe_loads(path.read_text(encoding="utf-8"))
            if bad:
                found[str(path.relative_to(REPO))] = bad
    assert found == {}
