"""The top-level kernels/ folder must not shadow Hugging Face's `kernels` package, which transformers imports at start.

Run from the repository root, the root is on sys.path (python -m, pytest), so `import kernels` finds our folder first.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_transformers_model_code_imports_from_the_repo_root():
    pytest.importorskip("kernels")  # transformers >= 5.25 depends on it
    done = _run(
        "import sys, os; assert os.path.abspath(sys.path[0] or '.') == os.getcwd()\n"
        "import transformers.modeling_utils\n"
        "from transformers import BertConfig, BertModel\n"
        "BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8))\n"
        "import kernels, rag_e2e.kernels as ours\n"
        "print(kernels.__file__); print(ours.__file__); print(callable(ours.topk_scores))\n"
    )
    assert done.returncode == 0, done.stderr
    theirs, ours, api = done.stdout.split()
    assert not Path(theirs).resolve().is_relative_to(ROOT / "kernels")
    assert Path(ours).resolve() == ROOT / "kernels" / "__init__.py"
    assert api == "True"


def test_without_the_package_the_error_says_so():
    # sys.path cut to the repo root and the standard library: no installed `kernels` to hand over to.
    done = _run(
        "import sys, sysconfig\n"
        "sys.path[:] = ['', sysconfig.get_paths()['stdlib']]\n"
        "try:\n    import kernels\nexcept ModuleNotFoundError as e:\n    print(e.name, 'kernels' in sys.modules)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["kernels", "False"]
