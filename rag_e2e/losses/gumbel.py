"""Gumbel top-k: the expected utility of passage sets sampled from the retriever (Stochastic RAG, Zamani &
Bendersky 2024), differentiated through the relaxed top-k of Xie & Ermon (2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rag_e2e.losses.reader_term import reader_nll
from rag_e2e.losses.registry import ObjectiveSettings, Terms, objective
from rag_e2e.losses.scores import ReaderScores


def soft_topk(keys: torch.Tensor, m: int, temperature: float) -> torch.Tensor:
    """The relaxed k-hot of Gumbel-top-k (Xie & Ermon 2019): m successive softmaxes, each with the mass already
    taken masked out. keys (..., k) -> (..., k), entries in [0, 1] summing to m."""
    soft = torch.zeros_like(keys)
    onehot = torch.zeros_like(keys)
    logits = keys
    floor = torch.finfo(keys.dtype).eps  # not `tiny`: 1/tiny overflows in the backward of a clamped entry (NaN)
    for _ in range(m):
        logits = logits + torch.log((1.0 - onehot).clamp_min(floor))
        onehot = F.softmax(logits / temperature, dim=-1)
        soft = soft + onehot
    return soft


def hard_topk(keys: torch.Tensor, m: int) -> torch.Tensor:
    """The 0/1 mask of the m largest keys, (..., k)."""
    return torch.zeros_like(keys).scatter_(-1, keys.topk(m, dim=-1).indices, 1.0)


def gumbel_noise(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel samples −log(−log U)."""
    u = torch.rand(shape, dtype=like.dtype, device=like.device)
    tiny = torch.finfo(like.dtype).tiny
    return -torch.log((-torch.log(u.clamp_min(tiny))).clamp_min(tiny))


def set_utility(answer_ll: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log p(y|x,S) = log (Σ_z w_z p(y|x,z) / Σ_z w_z) for passage weights w: a 0/1 mask of m passages (the set
    itself) or its relaxed k-hot (`soft_topk`, also summing to m).

    answer_ll (B, k), mask (B, S, k) -> (B, S). Shifted by the best weighted ll so a hard set's value is exact; the
    ratio of an unweighted passage to it is capped at e^30.
    """
    m = mask.detach().sum(-1, keepdim=True)  # (B, S, 1)
    ll = answer_ll.unsqueeze(1).expand_as(mask)  # (B, S, k)
    top = ll.masked_fill(mask.detach() == 0, float("-inf")).amax(-1, keepdim=True)  # (B, S, 1)
    ratio = torch.exp((ll - top).clamp_max(30.0))  # p_z / p_top
    return (top + torch.log((mask * ratio).sum(-1, keepdim=True)) - torch.log(m)).squeeze(-1)


@objective("gumbel_topk", min_docs=2)
def gumbel_topk_objective(x: ReaderScores, s: ObjectiveSettings, noise: torch.Tensor | None = None) -> Terms:
    """Stochastic RAG (Zamani & Bendersky 2024): maximise the expected utility of passage sets sampled without
    replacement from the retriever,

        retriever = −(1/S) Σ_i U(S_i),   S_i = top-m(s/θ + g_i), g_i ~ Gumbel (Plackett–Luce sampling from p_R),
        U(S) = log p(y|x,S) = log (1/m) Σ_{z∈S} sg(p(y|x,z))

    reported at the hard sets S_i and differentiated as the relaxed utility U(w_i), w_i = the relaxed top-m k-hot
    of the same keys (temperature λ). Not the straight-through mask inside U: its derivative for a passage left
    out, p(y|x,z) / Σ_{S_i} p(y|x,z'), is unbounded when that passage explains the answer and the set does not
    (measured: 10^3–10^4 times the other objectives' gradients, so one such question sets the step under gradient
    clipping); U(w) bounds it by w_z p(y|x,z) ≤ Σ w p. S = `model.gumbel_samples`,
    m = `model.gumbel_set_size` (< k), λ = `model.gumbel_temperature`; `noise` (B, S, k) fixes g for tests.
    Reader: `reader_nll`, as in `emdr2`. Paper → ours: the retrieval policy's top-k sample = S_i, utility
    U(y, G(x, S_i)) = the answer log-likelihood given S_i.
    """
    batch, k = x.doc_scores.shape
    if noise is None:
        noise = gumbel_noise((batch, s.gumbel_samples, k), x.doc_scores.detach())
    keys = x.doc_scores.unsqueeze(1) / s.prior_temperature + noise  # (B, S, k)
    ll = x.answer_ll.detach()
    hard = set_utility(ll, hard_topk(keys.detach(), s.gumbel_set_size))  # (B, S) the sampled sets' utility
    relaxed = set_utility(ll, soft_topk(keys, s.gumbel_set_size, s.gumbel_temperature))  # (B, S)
    utility = hard + (relaxed - relaxed.detach())  # value of the hard sets, gradient of the relaxed ones
    return Terms(reader=reader_nll(x, s), retriever=-utility.mean(-1))
