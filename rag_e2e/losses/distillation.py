"""The distillation objectives: the retriever's distribution over the k passages is pulled toward one the reader
gives. Perplexity distillation and leave-one-out (Atlas, Izacard et al. 2022, §2.2), REPLUG LSR (Shi et al. 2023).
Notation as in `rag_e2e.losses.registry`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rag_e2e.losses.marginals import doc_log_prior
from rag_e2e.losses.reader_term import reader_nll
from rag_e2e.losses.registry import ObjectiveSettings, Terms, objective
from rag_e2e.losses.scores import ReaderScores


def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) = Σ_z p_z (log p_z − log q_z) over the last axis, from log-probabilities. -> (B,)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


@objective("pdist")
def pdist_objective(x: ReaderScores, s: ObjectiveSettings) -> Terms:
    """Perplexity distillation (Atlas §2.2): the retriever matches the reader's posterior over the k passages,

        retriever = KL( p_LM ‖ p_R ),   p_LM(z) = softmax_z( sg(ll_z) / τ ),   τ = `model.lm_temperature`

    Reader: `reader_nll`, as in `emdr2`. Paper → ours: p_k ∝ exp(log p_LM(a|d_k,q)/τ) = p_LM(z); θ as above.
    """
    target = F.log_softmax(x.answer_ll.detach() / s.lm_temperature, dim=-1)  # (B, k)
    return Terms(reader=reader_nll(x, s),
                 retriever=kl(target, doc_log_prior(x.doc_scores, s.prior_temperature)))


def leave_one_out_ll(answer_ll: torch.Tensor) -> torch.Tensor:
    """(B, k) log p(y|x, S_k \\ {z}) for each z: the mixture over the other k−1 passages."""
    k = answer_ll.shape[-1]
    others = answer_ll.unsqueeze(1).expand(-1, k, -1)  # (B, z, j)
    drop = torch.eye(k, dtype=torch.bool, device=answer_ll.device)  # j == z
    return torch.logsumexp(others.masked_fill(drop, float("-inf")), dim=-1) - math.log(k - 1)


@objective("loop", min_docs=2)
def loop_objective(x: ReaderScores, s: ObjectiveSettings) -> Terms:
    """Leave-one-out perplexity distillation (Atlas §2.2): a passage matters as much as the answer suffers
    without it,

        retriever = KL( p_LOOP ‖ p_R ),   p_LOOP(z) = softmax_z( −sg(log p(y|x, S_k \\ {z})) / τ )

    Reader: `reader_nll`, as in `emdr2`. Paper → ours: p_LOOP(d_k) ∝ exp(−log p_LM(a|D_K\\{d_k}, q)) (τ = 1
    there; `model.lm_temperature` here). Needs k ≥ 2.
    """
    target = F.log_softmax(-leave_one_out_ll(x.answer_ll.detach()) / s.lm_temperature, dim=-1)  # (B, k)
    return Terms(reader=reader_nll(x, s),
                 retriever=kl(target, doc_log_prior(x.doc_scores, s.prior_temperature)))


@objective("lsr")
def lsr_objective(x: ReaderScores, s: ObjectiveSettings) -> Terms:
    """REPLUG LSR (Shi et al. 2023, §4), for a frozen LM: the retriever's distribution moves toward the LM's,

        retriever = KL( p_R ‖ Q ),   Q(z) = softmax_z( sg(p(y|x,z)) / β ),   β = `model.lsr_temperature`

    Note Q is a softmax of likelihoods, not log-likelihoods, and the KL runs from p_R (mode-seeking), unlike
    `pdist`; so β must be on the scale of the likelihoods' differences, or Q is uniform wherever they are all small.
    (REPLUG's released code, LSR_finetune/replug_lsr.py, instead softmaxes log-probabilities and its KLDivLoss
    computes KL(Q ‖ P_R), i.e. `pdist`; we follow the paper's equations.) Reader: `reader_nll` (no gradient when the
    reader is frozen, REPLUG's setting).
    Paper → ours: P_R(d|x) = softmax(s(d,x)/γ) = p_R with γ = θ; Q(d|x,y) = Q(z); P_LM(y|d,x) = exp(ll_z).
    """
    log_q = F.log_softmax(x.answer_ll.detach().exp() / s.lsr_temperature, dim=-1)  # (B, k)
    return Terms(reader=reader_nll(x, s),
                 retriever=kl(doc_log_prior(x.doc_scores, s.prior_temperature), log_q))

