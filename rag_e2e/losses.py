"""RAG marginal likelihoods (Lewis et al., 2020) as pure functions.

Notation: x the question, z one of ``n_docs`` retrieved documents, y = (y_1..y_T) the target.

    prior          log p(z|x)        = log_softmax_z(doc_scores / temperature)
    RAG-Sequence   log p(y|x)        = logsumexp_z [ log p(z|x) + Σ_t log p(y_t|x,z,y<t) ]
    RAG-Token      log p(y_t|x,y<t)  = logsumexp_z [ log p(z|x) + log p(y_t|x,z,y<t) ],  log p(y|x) = Σ_t of that

Conventions shared by every function:
    seq_logits  (B*n_docs, T, V)  row ``b*n_docs + j`` is document j of example b (example-major).
    doc_scores  (B, n_docs)       raw retrieval scores (q·d); may carry gradient into the retriever.
    labels      (B, T)            ``seq_logits[:, t]`` predicts ``labels[:, t]`` (decoder inputs are the labels
                                  shifted right); positions equal to ``ignore_index`` contribute nothing.

Label smoothing follows transformers' ``RagSequenceForGeneration.get_nll`` / ``RagTokenForGeneration.get_nll``:
``loss = (1 - ε)·nll + ε/V · smooth_loss``, where ``smooth_loss`` replaces the target log-prob by the sum of the
log-probs over the whole vocabulary and is marginalized over documents the same way as the nll.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def doc_log_prior(doc_scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Retrieval prior log p(z|x) over the retrieved documents.

    Args:
        doc_scores: (B, n_docs) raw retrieval scores.
        temperature: divides the scores before the softmax; < 1 sharpens, > 1 flattens.

    Returns:
        (B, n_docs) log-probabilities; each row logsumexps to 0.
    """
    return F.log_softmax(doc_scores / temperature, dim=-1)


def marginalize(log_probs: torch.Tensor, doc_log_prior: torch.Tensor) -> torch.Tensor:
    """log Σ_z p(z|x) · exp(log_probs[:, z]) over the document axis (dim 1).

    Args:
        log_probs: (B, n_docs, *rest) per-document log-probabilities.
        doc_log_prior: (B, n_docs) log p(z|x), broadcast over ``rest``.

    Returns:
        (B, *rest) marginal log-probabilities.
    """
    prior = doc_log_prior.reshape(*doc_log_prior.shape, *([1] * (log_probs.dim() - 2)))  # (B, n_docs, 1, ...)
    return torch.logsumexp(log_probs + prior, dim=1)


def sequence_nll_from_token_ll(tok_ll: torch.Tensor, doc_scores: torch.Tensor, temperature: float = 1.0
                               ) -> torch.Tensor:
    """RAG-Sequence NLL from per-document answer token log-likelihoods.

    ``−log p(y|x) = −logsumexp_z [ log p(z|x) + Σ_t log p(y_t|x,z,y<t) ]``

    Args:
        tok_ll: (B, n_docs, T) log p(y_t|x,z,y<t) of each target token, 0 at ignored positions.
        doc_scores: (B, n_docs) raw retrieval scores; gradient flows into them.
        temperature: prior temperature, see :func:`doc_log_prior`.

    Returns:
        (B,) per-example loss.
    """
    _check_token_ll(tok_ll, doc_scores)
    return -marginalize(tok_ll.sum(-1), doc_log_prior(doc_scores, temperature))


def token_nll_from_token_ll(tok_ll: torch.Tensor, doc_scores: torch.Tensor, temperature: float = 1.0
                            ) -> torch.Tensor:
    """RAG-Token NLL from per-document answer token log-likelihoods.

    ``−log p(y|x) = −Σ_t logsumexp_z [ log p(z|x) + log p(y_t|x,z,y<t) ]``; an ignored position has tok_ll = 0 for
    every z, so its term is logsumexp_z log p(z|x) = 0.

    Args:
        tok_ll: (B, n_docs, T) as in :func:`sequence_nll_from_token_ll`.
        doc_scores: (B, n_docs) raw retrieval scores.
        temperature: prior temperature.

    Returns:
        (B,) per-example loss.
    """
    _check_token_ll(tok_ll, doc_scores)
    return -marginalize(tok_ll, doc_log_prior(doc_scores, temperature)).sum(-1)


def _check_token_ll(tok_ll: torch.Tensor, doc_scores: torch.Tensor) -> None:
    if tok_ll.dim() != 3 or tok_ll.shape[:2] != doc_scores.shape:
        raise ValueError(f"tok_ll has shape {tuple(tok_ll.shape)}; expected (B, n_docs, T) with (B, n_docs) = "
                         f"{tuple(doc_scores.shape)} from doc_scores")


def _per_doc_log_probs(
    seq_logits: torch.Tensor, doc_scores: torch.Tensor, labels: torch.Tensor, n_docs: int, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checks shapes; returns log p(·|x,z,y<t) (B, n_docs, T, V), safe targets (B, T), kept-position mask (B, T)."""
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
    target = labels.masked_fill(~keep, 0)  # (B, T) any valid index; masked out below
    return seq_logprobs, target, keep


def _smoothed(nll: torch.Tensor, smooth_ll: torch.Tensor, epsilon: float, vocab_size: int) -> torch.Tensor:
    # (1 - ε)·nll + (ε/V)·(−Σ_v log p(v)), as in transformers' get_nll
    return (1.0 - epsilon) * nll - (epsilon / vocab_size) * smooth_ll


def rag_sequence_nll(
    seq_logits: torch.Tensor,
    doc_scores: torch.Tensor,
    labels: torch.Tensor,
    n_docs: int,
    *,
    ignore_index: int = -100,
    temperature: float = 1.0,
    epsilon: float = 0.0,
) -> torch.Tensor:
    """RAG-Sequence negative log-likelihood: one document generates the whole target.

    ``−log p(y|x) = −logsumexp_z [ log p(z|x) + Σ_t log p(y_t|x,z,y<t) ]``

    With ``epsilon > 0`` the smoothing term matches transformers exactly:
    ``smooth(x) = logsumexp_z [ V·log p(z|x) + Σ_t Σ_v log p(v|x,z,y<t) ]`` — transformers adds the prior to every
    vocabulary entry of one position before summing over the vocabulary, so the prior enters V times.

    Args:
        seq_logits: (B*n_docs, T, V) generator logits, example-major rows.
        doc_scores: (B, n_docs) raw retrieval scores; gradient flows into them.
        labels: (B, T) targets aligned with ``seq_logits``; ``ignore_index`` marks positions to skip.
        n_docs: documents per example.
        ignore_index: label value that contributes nothing.
        temperature: prior temperature, see :func:`doc_log_prior`.
        epsilon: label-smoothing weight ε in [0, 1).

    Returns:
        (B,) per-example loss.
    """
    seq_logprobs, target, keep = _per_doc_log_probs(seq_logits, doc_scores, labels, n_docs, ignore_index)
    log_prior = doc_log_prior(doc_scores, temperature)  # (B, n_docs)
    index = target[:, None, :, None].expand(-1, n_docs, -1, 1)  # (B, n_docs, T, 1)
    tok_ll = seq_logprobs.gather(-1, index).squeeze(-1).masked_fill(~keep[:, None], 0.0)  # (B, n_docs, T)
    nll = -marginalize(tok_ll.sum(-1), log_prior)  # (B,)
    if epsilon == 0.0:
        return nll
    vocab_size = seq_logprobs.shape[-1]
    tok_smooth = seq_logprobs.sum(-1).masked_fill(~keep[:, None], 0.0)  # (B, n_docs, T)
    smooth_ll = marginalize(tok_smooth.sum(-1), vocab_size * log_prior)  # (B,)
    return _smoothed(nll, smooth_ll, epsilon, vocab_size)


def rag_token_nll(
    seq_logits: torch.Tensor,
    doc_scores: torch.Tensor,
    labels: torch.Tensor,
    n_docs: int,
    *,
    ignore_index: int = -100,
    temperature: float = 1.0,
    epsilon: float = 0.0,
) -> torch.Tensor:
    """RAG-Token negative log-likelihood: each target token may come from a different document.

    ``−log p(y|x) = −Σ_t logsumexp_z [ log p(z|x) + log p(y_t|x,z,y<t) ]``

    With ``epsilon > 0``: ``smooth(x) = Σ_t Σ_v log p(v|x,y<t)`` on the per-token marginal, as in transformers.

    Args:
        seq_logits: (B*n_docs, T, V) generator logits, example-major rows.
        doc_scores: (B, n_docs) raw retrieval scores; gradient flows into them.
        labels: (B, T) targets aligned with ``seq_logits``; ``ignore_index`` marks positions to skip.
        n_docs: documents per example.
        ignore_index: label value that contributes nothing.
        temperature: prior temperature, see :func:`doc_log_prior`.
        epsilon: label-smoothing weight ε in [0, 1).

    Returns:
        (B,) per-example loss.
    """
    seq_logprobs, target, keep = _per_doc_log_probs(seq_logits, doc_scores, labels, n_docs, ignore_index)
    log_prior = doc_log_prior(doc_scores, temperature)  # (B, n_docs)
    rag_logprobs = marginalize(seq_logprobs, log_prior)  # (B, T, V) log p(·|x,y<t)
    tok_ll = rag_logprobs.gather(-1, target[..., None]).squeeze(-1).masked_fill(~keep, 0.0)  # (B, T)
    nll = -tok_ll.sum(-1)  # (B,)
    if epsilon == 0.0:
        return nll
    smooth_ll = rag_logprobs.sum(-1).masked_fill(~keep, 0.0).sum(-1)  # (B,)
    return _smoothed(nll, smooth_ll, epsilon, rag_logprobs.shape[-1])
