"""A training DataLoader that a run killed mid-epoch resumes exactly: same remaining batches, same RNG stream.

Lightning saves and restores any loader with `state_dict` / `load_state_dict` (it skips no batches itself). The
state here is where the epoch stood (its sampler seed and the batches already yielded) and torch's RNG state when
the checkpoint was written. Uninterrupted runs draw exactly what `DataLoader(shuffle=True)` (single process) or
Lightning's `DistributedSampler` (DDP) would, so seeded numbers do not change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler


class RandomOrder(Sampler[int]):
    """A fresh permutation per epoch, seeded from torch's global RNG when the epoch starts, as `RandomSampler`."""

    def __init__(self, size: int):
        self.size = size
        self.seed: int | None = None  # this epoch's permutation seed (set at the epoch start, or restored)

    def __len__(self) -> int:
        return self.size

    def order(self) -> list[int]:
        if self.seed is None:
            self.seed = int(torch.empty((), dtype=torch.int64).random_().item())  # RandomSampler's draw
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed)).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.order())

    def set_epoch(self, epoch: int) -> None:
        pass


class ShardOrder(DistributedSampler):
    """This rank's slice of a seeded per-epoch permutation (Lightning's DDP sampler); its order needs no RNG."""

    def order(self) -> list[int]:
        return list(super().__iter__())


class ResumableBatches(Sampler[list[int]]):
    """Batches of `batch_size` indices in the order of `sampler` (`RandomOrder` or `ShardOrder`), from `skip` on."""

    def __init__(self, sampler: RandomOrder | ShardOrder, batch_size: int):
        self.sampler, self.batch_size = sampler, batch_size
        self.epoch = 0
        self.yielded = 0  # batches of this epoch handed out so far
        self.skip = 0  # batches to pass over when the next epoch iteration starts (a resumed epoch)

    def __len__(self) -> int:
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch; a new epoch starts its permutation afresh."""
        if epoch != self.epoch:
            self.skip = 0
            if isinstance(self.sampler, RandomOrder):
                self.sampler.seed = None
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.sampler.order()
        start, self.skip = self.skip, 0
        self.yielded = start
        for lo in range(start * self.batch_size, len(order), self.batch_size):
            self.yielded += 1
            yield order[lo : lo + self.batch_size]
        if isinstance(self.sampler, RandomOrder):
            self.sampler.seed = None  # the next pass over the data (a new epoch, or a cycle) draws a new order


class ResumableLoader(DataLoader):
    """A DataLoader over `ResumableBatches` with the state Lightning checkpoints.

    Args:
        dataset: the examples.
        batch_size: per process.
        collate_fn: list of examples -> batch.
        seed: the DDP permutation seed (Lightning's `PL_GLOBAL_SEED`); unused in one process.
        rank, world_size: this process's shard.
        num_workers: DataLoader workers.
    """

    def __init__(self, dataset: Sized, *, batch_size: int, collate_fn: Callable, seed: int = 0, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0):
        sampler: RandomOrder | ShardOrder = (
            RandomOrder(len(dataset)) if world_size == 1
            else ShardOrder(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed))
        super().__init__(dataset, batch_sampler=ResumableBatches(sampler, batch_size), collate_fn=collate_fn,
                         num_workers=num_workers, persistent_workers=num_workers > 0)
        self._rng_to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        batches: ResumableBatches = self.batch_sampler
        sampler = batches.sampler
        state = {"epoch": batches.epoch, "batches": batches.yielded,
                 "seed": sampler.seed if isinstance(sampler, RandomOrder) else None,
                 "rng_cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        batches: ResumableBatches = self.batch_sampler
        batches.epoch = state["epoch"]
        if state["batches"] < len(batches):  # mid-epoch; an epoch that had ended simply starts the next one
            batches.skip = state["batches"]
            if isinstance(batches.sampler, RandomOrder):
                batches.sampler.seed = state["seed"]
        self._rng_to_restore = state

    def __iter__(self):
        state, self._rng_to_restore = self._rng_to_restore, None
        resuming_mid_epoch = state is not None and self.batch_sampler.skip > 0
        if state is not None and not resuming_mid_epoch:
            _set_rng(state)  # the epoch starts here, as it did after the checkpoint: the same draws follow
        iterator = super().__iter__()  # draws the workers' base seed from the global RNG
        if resuming_mid_epoch:
            _set_rng(state)  # mid-epoch the uninterrupted run drew nothing here: undo the draw above
        return iterator


def _set_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["rng_cpu"])
    if "rng_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
