"""The async refresh's worker: one background thread that encodes and builds while training goes on.

On GPU it encodes on a side stream that waits for the passage-tower snapshot. On CPU it shares the cores with
training: its own intra-op thread count, a lower priority, and optionally cores the training thread yields meanwhile.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch


def _per_thread_intra_op() -> bool:
    """Whether torch.set_num_threads affects only the calling thread: true with the OpenMP backend, where the thread
    count is a per-thread OpenMP setting; with the native pool it would resize training's threads too."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def _lower_this_threads_priority(nice: int) -> None:
    """Raise the calling thread's nice value to `nice` (Linux: a thread is its own scheduling entity, so training's
    threads keep theirs). Raising it needs no privilege; where per-thread priorities are missing, a no-op."""
    if nice > 0 and hasattr(os, "setpriority"):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))


class RefreshWorker:
    """One refresh at a time in a thread named "index-refresh…": the training thread submits it and collects it.

    Args:
        cpu_worker_threads: on CPU, the worker's own intra-op thread count (0: torch's setting).
        cpu_yield_threads: on CPU, training runs on its thread count minus `cpu_worker_threads` (at least 1) while
            the worker encodes.
        cpu_worker_nice: on CPU, the worker thread's nice value (0: training's).
    """

    def __init__(self, cpu_worker_threads: int = 1, cpu_yield_threads: bool = False, cpu_worker_nice: int = 19):
        self.cpu_worker_threads, self.cpu_yield_threads = cpu_worker_threads, cpu_yield_threads
        self.cpu_worker_nice = cpu_worker_nice
        self._yielded_from: int | None = None  # training's thread count while it yields cores to the worker
        self._pool: ThreadPoolExecutor | None = None
        self._pending: tuple[Future, int, float] | None = None  # (future, snapshot step, start time)

    @property
    def in_flight(self) -> bool:
        """A refresh was submitted and not collected yet."""
        return self._pending is not None

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-refresh")

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def submit(self, job: Callable[..., Any], *args: Any, device: torch.device, step: int) -> None:
        """Training thread: run `job(encoding, *args)` in the worker; `job` encodes inside `with encoding():`.

        On CUDA the worker's side stream waits for what the training stream has queued so far (the snapshot copy);
        on CPU the training thread yields cores to the worker until `collect`.
        """
        ready = torch.cuda.current_stream(device).record_event() if device.type == "cuda" else None
        if ready is None:
            self.yield_threads()
        encoding = functools.partial(self._encoding, device, ready)
        self._pending = (self._pool.submit(job, encoding, *args), step, time.perf_counter())

    def done(self) -> bool:
        """The refresh in flight has finished (a result or an error is waiting)."""
        return self._pending[0].done()

    def collect(self) -> tuple[Any, int]:
        """Training thread: the in-flight job's result (waiting for it) and its snapshot step; training's cores back."""
        future, step, _ = self._pending
        self._pending = None
        self.take_back_threads()
        return future.result(), step

    def yield_threads(self) -> None:
        """Training thread, async refresh on CPU: leave the worker its cores (per-thread settings only)."""
        if self.cpu_yield_threads and self.cpu_worker_threads and _per_thread_intra_op():
            self._yielded_from = torch.get_num_threads()
            torch.set_num_threads(max(1, self._yielded_from - self.cpu_worker_threads))

    def take_back_threads(self) -> None:
        if self._yielded_from is not None:
            torch.set_num_threads(self._yielded_from)
            self._yielded_from = None

    @contextlib.contextmanager
    def _encoding(self, device: torch.device, ready: torch.cuda.Event | None) -> Iterator[None]:
        """Worker thread: on CPU, its thread count and priority; on CUDA, a side stream once `ready` has passed."""
        if ready is None:
            if self.cpu_worker_threads and _per_thread_intra_op():
                torch.set_num_threads(self.cpu_worker_threads)  # this worker thread only
            _lower_this_threads_priority(self.cpu_worker_nice)
            yield
            return
        stream = torch.cuda.Stream(device=device)
        stream.wait_event(ready)
        with torch.cuda.stream(stream):
            yield
        stream.synchronize()
