"""Custom kernels (Triton, optional) with torch references.

This folder installs as ``rag_e2e.kernels`` (pyproject's package-dir). Run from the repository root (``python -m``,
pytest), the root is on ``sys.path`` and the folder is also importable as a top-level ``kernels``, the name of Hugging
Face's package that transformers imports at start. Imported under that name, it hands over to the installed package.
"""

if __name__ == "kernels":
    import importlib.machinery
    import importlib.util
    import os
    import sys

    def _hand_over() -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        elsewhere = [p for p in sys.path if os.path.abspath(p or os.curdir) != root]
        spec = importlib.machinery.PathFinder.find_spec("kernels", elsewhere)
        if spec is None or spec.loader is None:
            del sys.modules["kernels"]
            raise ModuleNotFoundError("No module named 'kernels' (outside this repository's kernels/)", name="kernels")
        module = importlib.util.module_from_spec(spec)
        sys.modules["kernels"] = module  # the import statement returns what sys.modules holds once we finish
        spec.loader.exec_module(module)

    _hand_over()
else:
    from ._autotune import force as force_cpu_search
    from .topk import topk_scores, topk_scores_reference

    __all__ = ["force_cpu_search", "topk_scores", "topk_scores_reference"]
