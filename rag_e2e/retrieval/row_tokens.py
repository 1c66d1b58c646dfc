"""Per-row token cache for encoding scattered corpus rows (a partial refresh re-encodes a few rows in any order).

A full refresh reuses token batches of consecutive rows; a partial one picks different rows every time, so it would
tokenize them again on each refresh, which on a small tower costs about as much as the forward pass. The rows of
those same batches are kept unpadded in one flat array with row offsets (the corpus is not tokenized a second
time), and any set of rows is padded on demand to exactly what `tokenize_passages` gives for those passages.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from rag_e2e.data.types import Passage
from rag_e2e.retrieval.encoders import tokenize_passages


class RowTokens:
    """Unpadded token ids of every corpus row: `flat[offsets[r]:offsets[r + 1]]` is row r's."""

    def __init__(self, batches: list[dict[str, torch.Tensor]], tokenizer: PreTrainedTokenizerBase):
        """`batches`: padded input_ids / attention_mask of consecutive corpus rows, in order (`tokenize_passages`)."""
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.left = tokenizer.padding_side == "left"
        # A boolean index walks each batch row by row, so the kept tokens come out row after row, in order.
        self.flat = torch.cat([b["input_ids"][b["attention_mask"].bool()] for b in batches]) if batches else \
            torch.empty(0, dtype=torch.int64)
        lengths = torch.cat([b["attention_mask"].sum(1) for b in batches]) if batches else torch.empty(0)
        self.offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int64)
        self.offsets[1:] = lengths.to(torch.int64).cumsum(0)

    @classmethod
    def tokenize(cls, tokenizer: PreTrainedTokenizerBase, corpus: list[Passage], max_length: int,
                 chunk: int = 8192) -> RowTokens:
        """Tokenize `corpus` in chunks of `chunk` rows (what a builder without token batches would do)."""
        return cls([tokenize_passages(tokenizer, corpus[i : i + chunk], max_length)
                    for i in range(0, len(corpus), chunk)], tokenizer)

    def batch(self, rows: list[int], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """input_ids / attention_mask (len(rows), longest) of these rows, padded on the tokenizer's side."""
        starts, ends = self.offsets[rows], self.offsets[[r + 1 for r in rows]]
        lengths = ends - starts
        width = int(lengths.max()) if rows else 0
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(rows), width), dtype=torch.int64)
        for i, (start, end, n) in enumerate(zip(starts.tolist(), ends.tolist(), lengths.tolist())):
            cols = slice(width - n, width) if self.left else slice(0, n)
            ids[i, cols] = self.flat[start:end]
            mask[i, cols] = 1
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
