"""What the forward pass gives every objective: the reader's answer scores under each retrieved passage.

Conventions shared by every loss function:
    seq_logits  (B*n_docs, T, V)  row ``b*n_docs + j`` is document j of example b (example-major).
    doc_scores  (B, n_docs)       raw retrieval scores (q·d); may carry gradient into the retriever.
    labels      (B, T)            ``seq_logits[:, t]`` predicts ``labels[:, t]`` (decoder inputs are the labels
                                  shifted right); positions equal to ``ignore_index`` contribute nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ReaderScores:
    """What the forward pass gives every objective."""

    doc_scores: torch.Tensor  # (B, k) s_z, with the retriever's graph
    token_ll: torch.Tensor  # (B, k, T) log p(y_t|x,z,y<t), 0 at ignored positions, with the reader's graph
    token_logprobs: torch.Tensor | None = None  # (B, k, T, V) log p(·|x,z,y<t); only for label smoothing
    keep: torch.Tensor | None = None  # (B, T) scored positions, with token_logprobs

    @property
    def answer_ll(self) -> torch.Tensor:
        return self.token_ll.sum(-1)  # (B, k) ll_z

    def reader_constant(self) -> ReaderScores:
        """The same scores with the reader side detached (for a retriever term)."""
        logprobs = None if self.token_logprobs is None else self.token_logprobs.detach()
        return ReaderScores(self.doc_scores, self.token_ll.detach(), logprobs, self.keep)

    def retriever_constant(self) -> ReaderScores:
        """The same scores with the doc scores detached (for a reader term)."""
        return ReaderScores(self.doc_scores.detach(), self.token_ll, self.token_logprobs, self.keep)


def scores_from_logits(seq_logits: torch.Tensor, doc_scores: torch.Tensor, labels: torch.Tensor, n_docs: int,
                       ignore_index: int = -100) -> ReaderScores:
    """Reader scores with full distributions (for label smoothing) from (B*n_docs, T, V) example-major logits."""
    batch, tgt_len = labels.shape
    if seq_logits.dim() != 3 or seq_logits.shape[:2] != (batch * n_docs, tgt_len):
        raise ValueError(
            f"seq_logits has shape {tuple(seq_logits.shape)}; expected (B*n_docs, T, V) ="
            f" ({batch * n_docs}, {tgt_len}, V) from labels {tuple(labels.shape)} and n_docs={n_docs}"
        )
    if doc_scores.shape != (batch, n_docs):
        raise ValueError(f"doc_scores has shape {tuple(doc_scores.shape)}; expected (B, n_docs) = ({batch}, {n_docs})")
    seq_logprobs = F.log_softmax(seq_logits, dim=-1).view(batch, n_docs, tgt_len, -1)  # (B, n_docs, T, V)
    keep = labels.ne(ignore_index)  # (B, T)
    target = labels.masked_fill(~keep, 0)[:, None, :, None].expand(-1, n_docs, -1, 1)  # any valid index; masked
    tok_ll = seq_logprobs.gather(-1, target).squeeze(-1).masked_fill(~keep[:, None], 0.0)  # (B, n_docs, T)
    return ReaderScores(doc_scores, tok_ll, seq_logprobs, keep)
