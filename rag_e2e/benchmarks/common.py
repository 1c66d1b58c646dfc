"""What every benchmark does the same way: its arguments, its clock, what ran it, its table and its JSON.

One copy, so that two benchmarks cannot disagree on how a median is taken, which runs a warm-up discards, how the
device is named in a result, or whether a result file can be left half-written.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from rag_e2e import atomic
from rag_e2e.tuning import cpu_model, host_string

__all__ = ["Table", "cpu_label", "device_label", "host_string", "medians", "parse_options", "percentile",
           "schedule", "time_alternately", "timed", "usage_error", "write_result"]

T = TypeVar("T")
clock: Callable[[], float] = time.perf_counter  # the one clock every benchmark reads (a test may replace it)


# --- arguments -------------------------------------------------------------------------------------------------


def usage_error(prog: str, message: str) -> typing.NoReturn:
    """Print `prog: error: message` on stderr and exit with 2, as argparse does: a mistyped argument costs one line,
    not a traceback (or a run that fails minutes later)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_options(args: Sequence[str], defaults: dict[str, object], *, prog: str, doc: str | None = None,
                  positional: int | None = None, extra: bool = True) -> tuple[dict, list[str]]:
    """The benchmark's own `key=value` options, typed, apart from the rest of the command line.

    Each default gives its option's type: a str, int or float value (that type, that default); a list (a comma-
    separated list of its first element's type); or a type, e.g. `int` or `list[int]` (that type, None when not
    given, for a default that depends on other options). A value that does not convert exits with one line.

    Args:
        args: the command line after the module name; `-h`/`--help` anywhere prints `doc` and exits with 0.
        defaults: option name -> default, as above.
        prog: the name error lines start with.
        positional: how many bare arguments (no `=`) there must be; None: any number (config overrides).
        extra: whether other `key=value` arguments are kept in the rest (config overrides, serve options) or are an
            error.

    Returns:
        (options, rest): every option of `defaults`, and the other arguments in their order.
    """
    if any(a in ("-h", "--help") for a in args):
        print((doc or f"usage: python -m {prog} [key=value ...]").strip())
        raise SystemExit(0)
    kinds = {key: _kind(default) for key, default in defaults.items()}
    opts = {key: None if isinstance(default, (type, types.GenericAlias)) else default
            for key, default in defaults.items()}
    rest, unknown = [], []
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq and key in kinds:
            opts[key] = _convert(prog, key, value, kinds[key])
        else:
            rest.append(arg)
            if eq and not extra:
                unknown.append(key)
    if unknown:
        usage_error(prog, f"unknown option{'s' * (len(unknown) > 1)} {', '.join(unknown)} "
                          f"(known: {', '.join(defaults)})")
    bare = [a for a in rest if "=" not in a]
    if positional is not None and len(bare) != positional:
        usage_error(prog, f"expected {positional} argument{'s' * (positional != 1)} without '=', got {len(bare)}"
                          f"{': ' + ' '.join(bare) if bare else ''} (--help for usage)")
    return opts, rest


def _kind(default: object) -> object:
    if isinstance(default, (type, types.GenericAlias)):
        return default
    if isinstance(default, list):
        return list[type(default[0])] if default else list[str]
    return type(default)


_NAMES = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a text", "texts")}


def _convert(prog: str, key: str, value: str, kind: object) -> object:
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        try:
            return [item(v) for v in value.split(",") if v]
        except ValueError:
            usage_error(prog, f"{key}={value}: expected a comma-separated list of {_NAMES[item][1]}")
    try:
        return kind(value)
    except ValueError:
        usage_error(prog, f"{key}={value}: expected {_NAMES[kind][0]}")


# --- timing ----------------------------------------------------------------------------------------------------


def timed(fn: Callable[..., T], /, *args, **kwargs) -> tuple[T, float]:
    """(fn(*args, **kwargs), its wall seconds on `clock`): every benchmark's seconds from the same clock. Arguments
    rather than a closure, so a call timed in a loop binds this iteration's values."""
    start = clock()
    result = fn(*args, **kwargs)
    return result, clock() - start


def schedule(names: Sequence[str], rounds: int, order: str = "rotate") -> list[list[str]]:
    """The order each round runs `names` in, so that a drifting background load does not always hit the same one.

    "rotate": a, b, c / b, c, a / c, a, b ...; "abba": a, b / b, a / a, b ... (a linear drift hits a pair alike);
    "fixed": a, b, c every round.
    """
    names = list(names)
    if order == "rotate":
        return [names[r % len(names):] + names[: r % len(names)] for r in range(rounds)]
    if order == "abba":
        return [names if r % 2 == 0 else names[::-1] for r in range(rounds)]
    if order == "fixed":
        return [list(names) for _ in range(rounds)]
    raise ValueError(f"unknown order {order!r} (rotate, abba, fixed)")


def time_alternately(fns: dict[str, Callable[[], object]], repeats: int, *, warmup: int = 0, order: str = "rotate",
                     timer: Callable[[Callable[[], object]], float] | None = None,
                     after: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """name -> its `repeats` times, every round running each fn once in `schedule`'s order.

    Alternating (rather than all of one, then all of the next) puts a change in background load on all of them.
    The first `warmup` rounds run the same way but are not kept (first calls allocate, compile, fill caches).
    `timer(fn)` times one call (default: `timed`'s wall seconds; CUDA events for a GPU); `after(name)` runs after
    each kept call, outside the time (e.g. to measure disk use).
    """
    timer = timer or (lambda fn: timed(fn)[1])
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r, names in enumerate(schedule(fns, warmup + repeats, order)):
        for name in names:
            seconds = timer(fns[name])
            if r >= warmup:
                times[name].append(seconds)
                if after is not None:
                    after(name)
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    """name -> median of its times: one slow outlier (a page fault, a GC pause) does not move it, unlike a mean."""
    return {name: statistics.median(values) for name, values in times.items()}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between order statistics (numpy's default), of a non-empty sequence."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# --- what ran it -----------------------------------------------------------------------------------------------


def device_label(cpu: str | None = None) -> str:
    """A result's "device": the CUDA device's name, else `cpu` (default "cpu (<torch threads> threads)"), so a CPU
    number is never read as a GPU one, nor one thread count's as another's."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return cpu if cpu is not None else f"cpu ({torch.get_num_threads()} threads)"


def cpu_label() -> str:
    """"cpu: <model name>" (or "cpu" where /proc/cpuinfo names none): what a CPU timing was taken on."""
    model = cpu_model()
    return f"cpu: {model}" if model else "cpu"


# --- output ----------------------------------------------------------------------------------------------------


class Table:
    """A fixed-width text table, one format spec per column (`"<10"`, `">11.2f"`), so header and rows line up.

    `header(*names)` uses each column's alignment and width only; `row(*values)` the whole spec, except for a str
    value (already formatted: its own precision, a unit) and None (a blank cell). A line ends at its last value
    that is not None, unpadded: a row may have fewer cells than the header.
    """

    def __init__(self, *specs: str, sep: str = ""):
        self.specs, self.sep = specs, sep
        self.widths = [_align_width(spec) for spec in specs]

    def header(self, *names: str) -> str:
        return self.sep.join(format(name, width) for name, width in zip(names, self.widths))

    def row(self, *values: object) -> str:
        values = list(values)
        while values and values[-1] is None:
            values.pop()
        cells = []
        for value, spec, width in zip(values, self.specs, self.widths):
            if value is None:
                value = ""
            cells.append(format(value, width if isinstance(value, str) else spec))
        return self.sep.join(cells)


def _align_width(spec: str) -> str:
    """`">11.2f"` -> `">11"`: a spec's alignment and width, which a header's text can take."""
    align = spec[0] if spec and spec[0] in "<>^" else ">"
    digits = "".join(c for c in spec.lstrip("<>^").split(".")[0] if c.isdigit())
    return f"{align}{digits}"


def write_result(path: str | Path, result: object, *, indent: int = 2, echo: bool = True) -> Path:
    """Write `result` as JSON to `path` atomically (a killed benchmark leaves the previous file, never half of one),
    creating its folder; prints "wrote <path>" unless `echo` is false. Returns the path."""
    path = atomic.write_text(path, json.dumps(result, indent=indent) + "\n")
    if echo:
        print(f"wrote {path}")
    return path
