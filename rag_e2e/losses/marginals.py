"""RAG marginal likelihoods (Lewis et al., 2020), as pure functions; tensor conventions in `rag_e2e.losses.scores`.

Notation: x the question, z one of ``n_docs`` (= k) retrieved documents, y = (y_1..y_T) the target.

    prior          log p(z|x)        = log_softmax_z(doc_scores / temperature)
    RAG-Sequence   log p(y|x)        = logsumexp_z [ log p(z|x) + Σ_t log p(y_t|x,z,y<t) ]
    RAG-Token      log p(y_t|x,y<t)  = logsumexp_z [ log p(z|x) + log p(y_t|x,z,y<t) ],  log p(y|x) = Σ_t of that

Label smoothing follows transformers' ``RagSequenceForGeneration.get_nll`` / ``RagTokenForGeneration.get_nll``:
``loss = (1 - ε)·nll + ε/V · smooth_loss``, where ``smooth_loss`` replaces the target log-prob by the sum of the
log-probs over the whole vocabulary and is marginalized over documents the same way as the nll.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rag_e2e.losses.scores import ReaderScores, scores_from_logits


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


def _smoothed(nll: torch.Tensor, smooth_ll: torch.Tensor, epsilon: float, vocab_size: int) -> torch.Tensor:
    # (1 - ε)·nll + (ε/V)·(−Σ_v log p(v)), as in transformers' get_nll
    return (1.0 - epsilon) * nll - (epsilon / vocab_size) * smooth_ll


def sequence_marginal_nll(x: ReaderScores, temperature: float = 1.0, epsilon: float = 0.0) -> torch.Tensor:
    """RAG-Sequence NLL (B,) from reader scores; with ε > 0 smoothed as transformers does it:
    ``smooth(x) = logsumexp_z [ V·log p(z|x) + Σ_t Σ_v log p(v|x,z,y<t) ]`` — transformers adds the prior to every
    vocabulary entry of one position before summing over the vocabulary, so the prior enters V times."""
    log_prior = doc_log_prior(x.doc_scores, temperature)  # (B, k)
    nll = -marginalize(x.token_ll.sum(-1), log_prior)  # (B,)
    if epsilon == 0.0:
        return nll
    vocab_size = x.token_logprobs.shape[-1]
    tok_smooth = x.token_logprobs.sum(-1).masked_fill(~x.keep[:, None], 0.0)  # (B, k, T)
    return _smoothed(nll, marginalize(tok_smooth.sum(-1), vocab_size * log_prior), epsilon, vocab_size)


def token_marginal_nll(x: ReaderScores, temperature: float = 1.0, epsilon: float = 0.0) -> torch.Tensor:
    """RAG-Token NLL (B,) from reader scores; an ignored position has token_ll = 0 for every z, so its term is
    logsumexp_z log p(z|x) = 0. With ε > 0: ``smooth(x) = Σ_t Σ_v log p(v|x,y<t)`` on the per-token marginal."""
    log_prior = doc_log_prior(x.doc_scores, temperature)  # (B, k)
    nll = -marginalize(x.token_ll, log_prior).sum(-1)  # (B,)
    if epsilon == 0.0:
        return nll
    rag_logprobs = marginalize(x.token_logprobs, log_prior)  # (B, T, V) log p(·|x,y<t)
    smooth_ll = rag_logprobs.sum(-1).masked_fill(~x.keep, 0.0).sum(-1)  # (B,)
    return _smoothed(nll, smooth_ll, epsilon, rag_logprobs.shape[-1])


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

    Args:
        seq_logits: (B*n_docs, T, V) generator logits, example-major rows.
        doc_scores: (B, n_docs) raw retrieval scores; gradient flows into them.
        labels: (B, T) targets aligned with ``seq_logits``; ``ignore_index`` marks positions to skip.
        n_docs: documents per example.
        ignore_index: label value that contributes nothing.
        temperature: prior temperature, see :func:`doc_log_prior`.
        epsilon: label-smoothing weight ε in [0, 1), see :func:`sequence_marginal_nll`.

    Returns:
        (B,) per-example loss.
    """
    scores = scores_from_logits(seq_logits, doc_scores, labels, n_docs, ignore_index)
    return sequence_marginal_nll(scores, temperature, epsilon)


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

    Args: as :func:`rag_sequence_nll`; smoothing as :func:`token_marginal_nll`.

    Returns:
        (B,) per-example loss.
    """
    scores = scores_from_logits(seq_logits, doc_scores, labels, n_docs, ignore_index)
    return token_marginal_nll(scores, temperature, epsilon)

