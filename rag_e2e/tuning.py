"""Choices made by measurement on the machine that runs them, once, and remembered per host.

CPUs of one kind differ (an AMD EPYC without bf16 matrix units, an Intel Xeon with AMX), so a constant tuned on one
is wrong on another. A choice is made by timing its candidates on a small probe the first time it is needed, and
kept in `$RAG_E2E_CACHE/tuning/<kind>.json` under a host string (CPU model, core count, torch version), so later runs
on the same machine reuse it and another machine measures again. The file is written atomically; a corrupt file is
measured over. `RAG_E2E_TUNING=off` measures every time without reading or writing the file.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rag_e2e import atomic
from rag_e2e.files import cache_root


def cache_dir() -> Path:
    """Where measured choices live: $RAG_E2E_CACHE/tuning, else ~/.cache/rag_e2e/tuning."""
    return cache_root() / "tuning"


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def host_string() -> str:
    """What a measurement depends on besides its inputs: the CPU model, the cores torch uses, torch's version."""
    model = cpu_model() or platform.processor() or platform.machine()
    return f"{model} | {os.cpu_count()} cpus | {torch.get_num_threads()} threads | torch {torch.__version__}"


def best_of(candidates: dict[str, Callable[[], object]], repeats: int = 2) -> dict[str, float]:
    """Seconds of each candidate: one warm-up call, then the fastest of `repeats` calls."""
    seconds = {}
    for name, run in candidates.items():
        run()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        seconds[name] = min(times)
    return seconds


def measured_choice(kind: str, key: str, measure: Callable[[], dict[str, float]]) -> str:
    """The fastest candidate for `key`: remembered for this host, else measured now (`measure` returns seconds per
    candidate) and remembered.

    Args:
        kind: the file the choice is kept in (e.g. "reader_dtype").
        key: what the choice is for (e.g. a model fingerprint and shape class).
        measure: times the candidates.
    """
    path = cache_dir() / f"{kind}.json"
    use_file = os.environ.get("RAG_E2E_TUNING", "on") != "off"
    table = _read(path) if use_file else {}
    host = host_string()
    entry = table.get(host, {}).get(key)
    if isinstance(entry, dict) and isinstance(entry.get("choice"), str):
        return entry["choice"]
    seconds = measure()
    choice = min(seconds, key=seconds.get)
    timed = ", ".join(f"{name} {s * 1000:.0f} ms" for name, s in seconds.items())
    print(f"rag-e2e: {kind} for {key} on this machine: {choice} (measured {timed})", file=sys.stderr)
    if use_file:
        table = _read(path)  # another process may have written meanwhile: keep its entries
        table.setdefault(host, {})[key] = {"choice": choice, "seconds": seconds}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path, json.dumps(table, indent=1, sort_keys=True) + "\n")
    return choice


def _read(path: Path) -> dict:
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}
