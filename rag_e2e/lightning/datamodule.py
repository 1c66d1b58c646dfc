"""Question batches for the RAG loss, and gold-passage batches for the optional reader-only loss."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from rag_e2e.data.types import QAExample


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


class RagDataModule(L.LightningDataModule):
    """Train/dev/test question loaders; training also cycles through reader-only examples when there are any."""

    def __init__(self, train: list[QAExample], dev: list[QAExample], test: list[QAExample],
                 reader: list[QAExample], collator: QACollator, *, batch_size: int, eval_batch_size: int,
                 reader_batch_size: int | None = None, num_workers: int = 0, use_reader: bool = False):
        super().__init__()
        self.train, self.dev, self.test, self.reader = train, dev, test, reader
        self.collator = collator
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.reader_batch_size = reader_batch_size or batch_size
        self.use_reader = use_reader and bool(reader)

    def _loader(self, examples: list[QAExample], batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(examples, batch_size=batch_size, shuffle=shuffle, collate_fn=self.collator,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self):
        rag = self._loader(self.train, self.batch_size, shuffle=True)
        if not self.use_reader:
            return rag
        reader = self._loader(self.reader, self.reader_batch_size, shuffle=True)
        return CombinedLoader({"rag": rag, "reader": reader}, mode="max_size_cycle")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dev, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test, self.eval_batch_size, shuffle=False)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        if isinstance(batch, QABatch):
            return batch.to(device)
        if isinstance(batch, dict):
            return {name: b.to(device) for name, b in batch.items()}
        return super().transfer_batch_to_device(batch, device, dataloader_idx)
