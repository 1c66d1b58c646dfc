"""Question batches for the RAG loss, and gold-passage batches for the optional reader-only loss."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, DistributedSampler
from transformers import PreTrainedTokenizerBase

from rag_e2e.data.types import QAExample
from rag_e2e.lightning.resumable import ResumableLoader


@dataclass
class QABatch:
    """A tokenized batch of questions; `labels` hold the first reference answer."""

    q_ids: torch.Tensor  # (B, Lq) query-encoder tokens
    q_mask: torch.Tensor  # (B, Lq)
    labels: torch.Tensor  # (B, T) generator targets, -100 = ignored
    examples: list[QAExample]

    @property
    def questions(self) -> list[str]:
        return [ex.question for ex in self.examples]

    def to(self, device: torch.device) -> QABatch:
        return QABatch(self.q_ids.to(device), self.q_mask.to(device), self.labels.to(device), self.examples)


class QACollator:
    """Tokenizes questions for the query encoder and answers as the reader's labels (`answer_labels`)."""

    def __init__(self, query_tokenizer: PreTrainedTokenizerBase,
                 answer_labels: Callable[[Sequence[str]], torch.Tensor], max_query_length: int):
        self.query_tokenizer, self.answer_labels = query_tokenizer, answer_labels
        self.max_query_length = max_query_length

    def __call__(self, examples: list[QAExample]) -> QABatch:
        tok = self.query_tokenizer([ex.question for ex in examples], truncation=True,
                                   max_length=self.max_query_length, padding=True, return_tensors="pt")
        labels = self.answer_labels([ex.answers[0] for ex in examples])
        return QABatch(tok["input_ids"], tok["attention_mask"], labels, examples)


def _process_group() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside DDP. Lightning has set up the group before loaders."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class RagDataModule(L.LightningDataModule):
    """Train/dev/test question loaders; training also cycles through reader-only examples when there are any.

    The loaders shard across DDP ranks themselves (the Trainer runs with `use_distributed_sampler=False`): training
    loaders are `ResumableLoader`s, whose position and RNG state the checkpoint holds, so a resumed run continues the
    same batch sequence; evaluation loaders use `DistributedSampler` (padding with repeats, counted once later).
    """

    def __init__(self, train: list[QAExample], dev: list[QAExample], test: list[QAExample],
                 reader: list[QAExample], collator: QACollator, *, batch_size: int, eval_batch_size: int,
                 reader_batch_size: int | None = None, num_workers: int = 0, use_reader: bool = False,
                 seed: int = 0):
        super().__init__()
        self.train, self.dev, self.test, self.reader = train, dev, test, reader
        self.collator = collator
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.reader_batch_size = reader_batch_size or batch_size
        self.use_reader = use_reader and bool(reader)
        self.seed = seed

    def _train_loader(self, examples: list[QAExample], batch_size: int) -> ResumableLoader:
        rank, world_size = _process_group()
        return ResumableLoader(examples, batch_size=batch_size, collate_fn=self.collator, seed=self.seed, rank=rank,
                               world_size=world_size, num_workers=self.num_workers)

    def _eval_loader(self, examples: list[QAExample]) -> DataLoader:
        rank, world_size = _process_group()
        sampler = DistributedSampler(examples, num_replicas=world_size, rank=rank, shuffle=False) \
            if world_size > 1 else None
        return DataLoader(examples, batch_size=self.eval_batch_size, sampler=sampler, collate_fn=self.collator,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self):
        rag = self._train_loader(self.train, self.batch_size)
        if not self.use_reader:
            return rag
        reader = self._train_loader(self.reader, self.reader_batch_size)
        return CombinedLoader({"rag": rag, "reader": reader}, mode="max_size_cycle")

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.dev)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        if isinstance(batch, QABatch):
            return batch.to(device)
        if isinstance(batch, dict):
            return {name: b.to(device) for name, b in batch.items()}
        return super().transfer_batch_to_device(batch, device, dataloader_idx)
