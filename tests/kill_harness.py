"""Run `rag-e2e train <overrides>` and SIGKILL it at a chosen point (a test harness, run as a subprocess).

    python tests/kill_harness.py <point> <n> <overrides...>

Points (n counts from 1):
    step          in the middle of training step n (after the forward pass, before backward)
    optimizer     right after the optimizer update of step n (weights moved; step count, checkpoint not yet)
    validation    mid-validation: right after the n-th validation batch (its metrics accumulated, not logged)
    build         inside the n-th index build (sync refresh, or the async worker), after half the corpus is encoded
    checkpoint    while the n-th checkpoint file is being written (half of its bytes are on disk)
    index_save    while the n-th saved index is being written (its vectors are on disk, meta.json is not)
    embeddings    in an encoding into `index.embeddings_dir`: the n-th shard is on disk, progress.json does not list it
    none          never: the uninterrupted reference run
"""

from __future__ import annotations

import os
import signal
import sys


def _kill() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_before(module, name: str, due) -> None:
    """Wrap `module.name` so that its call that `due()` picks is killed before it runs."""
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        if due():
            _kill()
        return original(*args, **kwargs)

    setattr(module, name, wrapped)


def _kill_after(owner, name: str, due) -> None:
    """Wrap `owner.name` so that its call that `due()` picks runs, and then the process is killed."""
    original = getattr(owner, name)

    def wrapped(*args, **kwargs):
        out = original(*args, **kwargs)
        if due():
            _kill()
        return out

    setattr(owner, name, wrapped)


def _arm(point: str, n: int) -> None:
    count = {"calls": 0}

    def due() -> bool:
        count["calls"] += 1
        return count["calls"] == n

    if point == "step":
        from rag_e2e.lightning.module import RagLitModule

        _kill_after(RagLitModule, "training_step", due)
    elif point == "optimizer":
        from rag_e2e.lightning.module import RagLitModule

        def optimizer_step(self, *args, **kwargs):
            super(RagLitModule, self).optimizer_step(*args, **kwargs)
            if due():
                _kill()

        RagLitModule.optimizer_step = optimizer_step
    elif point == "validation":
        from rag_e2e.lightning.module import RagLitModule

        _kill_after(RagLitModule, "validation_step", due)  # this batch's metrics are accumulated, the epoch's not
    elif point == "build":
        from rag_e2e.retrieval.refresh import IndexBuilder

        original_encode = IndexBuilder.encode

        def encode(self, encoder, start=0, end=None, progress=False):
            end = len(self.corpus) if end is None else end
            if due():
                original_encode(self, encoder, start, (start + end) // 2, progress)
                _kill()
            return original_encode(self, encoder, start, end, progress)

        IndexBuilder.encode = encode
    elif point == "checkpoint":
        import torch

        from rag_e2e.lightning import checkpoint_io

        def save_half(checkpoint, tmp):
            torch.save(checkpoint, tmp)
            if due():
                size = os.path.getsize(tmp)
                with open(tmp, "r+b") as f:
                    f.truncate(size // 2)
                _kill()

        original_save = checkpoint_io.AtomicCheckpointIO.save_checkpoint

        def save_checkpoint(self, checkpoint, path, storage_options=None):
            checkpoint_io.atomic.write_file(path, lambda tmp: save_half(checkpoint, tmp))

        checkpoint_io.AtomicCheckpointIO.save_checkpoint = save_checkpoint
        del original_save
    elif point == "index_save":
        from rag_e2e.retrieval import index_io

        _kill_before(index_io, "_write_meta", due)
    elif point == "embeddings":
        from rag_e2e.retrieval import embeddings

        _kill_before(embeddings, "_write_progress", due)
    elif point != "none":
        raise SystemExit(f"unknown kill point {point!r}")


def main() -> None:
    point, n, overrides = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    _arm(point, n)
    from rag_e2e.cli import main as cli_main

    sys.exit(cli_main(["train", *overrides]))


if __name__ == "__main__":
    main()
