"""Per-row token cache for encoding scattered corpus rows (a partial refresh re-encodes a few rows in any order).

A full refresh reuses token batches of consecutive rows; a partial one picks different rows every time, so it would
tokenize them again on each refresh, which on a small tower costs about as much as the forward pass. The corpus is
tokenized once, unpadded, into one flat int32 array with row offsets, and any set of rows is padded on demand to
exactly what `tokenize_passages` gives for those passages.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from rag_e2e.data.types import Passage

_CHUNK = 8192  # rows tokenized per call while building (bounds the transient Python lists)


class RowTokens:
    """Unpadded token ids of every corpus row: `flat[offsets[r]:offsets[r + 1]]` is row r's."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, corpus: list[Passage], max_length: int):
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.left = tokenizer.padding_side == "left"
        pieces, lengths = [], []
        for i in range(0, len(corpus), _CHUNK):
            batch = corpus[i : i + _CHUNK]
            ids = tokenizer([p.title for p in batch], [p.text for p in batch], truncation="only_second",
                            max_length=max_length, padding=False)["input_ids"]
            pieces += [torch.tensor(row, dtype=torch.int32) for row in ids]
            lengths += [len(row) for row in ids]
        self.flat = torch.cat(pieces) if pieces else torch.empty(0, dtype=torch.int32)
        self.offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
        self.offsets[1:] = torch.tensor(lengths, dtype=torch.int64).cumsum(0)

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
