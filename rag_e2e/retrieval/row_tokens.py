"""Per-row token cache: the corpus tokenized once, kept unpadded, padded on demand for any set of rows.

Passages never change during training, only the encoder, so a refresh should not tokenize them again (on a small
tower tokenizing costs about as much as the forward pass). A partial refresh picks different rows every time and an
out-of-core refresh cannot keep padded batches of a corpus larger than RAM allows, so both read their tokens from
here: every row's ids in one flat int32 array with row offsets (a 1M-passage corpus of ~30-token passages: ~0.13 GB),
padded per batch to exactly what `tokenize_passages` gives for those passages.
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
        self.flat = torch.cat([b["input_ids"][b["attention_mask"].bool()].to(torch.int32) for b in batches]) \
            if batches else torch.empty(0, dtype=torch.int32)
        lengths = torch.cat([b["attention_mask"].sum(1) for b in batches]) if batches else torch.empty(0)
        self.offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int64)
        self.offsets[1:] = lengths.to(torch.int64).cumsum(0)

    @classmethod
    def tokenize(cls, tokenizer: PreTrainedTokenizerBase, corpus: list[Passage], max_length: int,
                 chunk: int = 8192) -> RowTokens:
        """Tokenize `corpus` in chunks of `chunk` rows (what a builder without token batches would do)."""
        return cls([tokenize_passages(tokenizer, corpus[i : i + chunk], max_length)
                    for i in range(0, len(corpus), chunk)], tokenizer)

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    def batch(self, rows: list[int] | torch.Tensor, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """input_ids / attention_mask (len(rows), longest) of these rows, padded on the tokenizer's side."""
        rows = torch.as_tensor(rows, dtype=torch.int64)
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        width = int(lengths.max()) if rows.numel() else 0
        cols = torch.arange(width)
        # Row i's tokens sit in columns [0, n_i) (right padding) or [width - n_i, width) (left); a boolean mask
        # fills row by row, left to right, which is the order of the concatenated slices below.
        mask = cols < lengths[:, None] if not self.left else cols >= width - lengths[:, None]
        # Concatenation position j of row i maps to flat[starts_i + (j - first_i)], first_i = where row i begins.
        first = lengths.cumsum(0) - lengths
        source = (starts - first).repeat_interleave(lengths) + torch.arange(int(lengths.sum()))
        ids = torch.full((rows.numel(), width), self.pad_id, dtype=torch.int64)
        ids[mask] = self.flat[source].to(torch.int64)
        return {"input_ids": ids.to(device), "attention_mask": mask.to(torch.int64).to(device)}
