"""RAG marginal likelihoods (Lewis et al., 2020) and the retriever-training objectives, as pure functions.

Notation: x the question, z one of ``n_docs`` (= k) retrieved documents, y = (y_1..y_T) the target.

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

The objectives (``model.loss``) are registered in ``OBJECTIVES`` below; each maps `ReaderScores` to `Terms`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

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


# ---- retriever-training objectives ------------------------------------------------------------------------------
# Every objective reads the same reader scores and returns two terms: the reader's, whose gradient reaches only the
# reader (doc scores held constant), and the retriever's, whose gradient reaches only the doc scores (reader
# outputs held constant). Training minimises their sum; they are logged apart.
#
# Notation across the papers, mapped to ours (B questions, k retrieved passages each):
#   s_z = doc_scores[:, z] = q·d_z;   p_R(z|x) = softmax_z(s_z / θ), θ = `retriever.temperature`
#   ll_z = Σ_t log p(y_t|x,z,y<t), the reader's answer log-likelihood given passage z alone (`answer_ll`)
#   reading a set S of passages: a per-passage reader reads S as the uniform mixture
#       log p(y|x,S) = logsumexp_{z∈S} ll_z − log|S|
#   sg(·) = stop-gradient (.detach())


@dataclass(frozen=True)
class ObjectiveSettings:
    """Hyperparameters of the objectives (each uses the ones its docstring names)."""

    prior_temperature: float = 1.0  # θ in p_R = softmax(s/θ) (`retriever.temperature`)
    lm_temperature: float = 1.0  # τ of the pdist/loop targets (`model.lm_temperature`)
    lsr_temperature: float = 0.1  # β of REPLUG's LM distribution (`model.lsr_temperature`)
    label_smoothing: float = 0.0  # ε, sequence/token only (`model.label_smoothing`)
    gumbel_samples: int = 4  # sampled passage sets per question (`model.gumbel_samples`)
    gumbel_set_size: int = 2  # passages per sampled set, < k (`model.gumbel_set_size`)
    gumbel_temperature: float = 0.5  # λ of the relaxed top-k (`model.gumbel_temperature`)
    reader_mix: str = "uniform"  # the non-marginal objectives' reader term, see `reader_nll` (`model.reader_mix`)


@dataclass(frozen=True)
class Terms:
    """Per-example losses (B,) of one objective."""

    reader: torch.Tensor
    retriever: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.reader + self.retriever


Objective = Callable[[ReaderScores, ObjectiveSettings], Terms]


@dataclass(frozen=True)
class ObjectiveSpec:
    fn: Objective
    label_smoothing: bool = False  # supports ε > 0
    min_docs: int = 1  # needs at least this many retrieved passages


OBJECTIVES: dict[str, ObjectiveSpec] = {}


def objective(name: str, *, label_smoothing: bool = False, min_docs: int = 1) -> Callable[[Objective], Objective]:
    """Register `fn` as `model.loss=<name>`."""

    def register(fn: Objective) -> Objective:
        if name in OBJECTIVES:
            raise ValueError(f"objective '{name}' is registered twice")
        OBJECTIVES[name] = ObjectiveSpec(fn, label_smoothing, min_docs)
        return fn

    return register


def set_nll(answer_ll: torch.Tensor) -> torch.Tensor:
    """−log p(y|x,S) for S = all k passages read as a uniform mixture: −(logsumexp_z ll_z − log k). (B, k) -> (B,)."""
    return -(torch.logsumexp(answer_ll, dim=-1) - math.log(answer_ll.shape[-1]))


READER_MIXES = ("uniform", "retriever")


def reader_nll(x: ReaderScores, s: ObjectiveSettings) -> torch.Tensor:
    """The reader term of the objectives that train the retriever apart (emdr2, pdist, loop, lsr, gumbel_topk): the
    reader's NLL of the answer given the k retrieved passages, read as a mixture, (B,).

        uniform    −log p(y|x,S_k) = −log (1/k) Σ_z p(y|x,z)     the reader's own likelihood, blind to the retriever
                                                                 (as Atlas's Fusion-in-Decoder reader reads its top-k)
        retriever  −log Σ_z sg(p_R(z|x)) p(y|x,z)                 passages weighted by the retriever, held fixed (the
                                                                 RAG-Sequence marginal's reader side)
    """
    if s.reader_mix == "uniform":
        return set_nll(x.answer_ll)
    if s.reader_mix == "retriever":
        return sequence_marginal_nll(x.retriever_constant(), s.prior_temperature)
    raise ValueError(f"reader_mix is one of {', '.join(READER_MIXES)} (got '{s.reader_mix}')")


def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) = Σ_z p_z (log p_z − log q_z) over the last axis, from log-probabilities. -> (B,)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _marginal_terms(x: ReaderScores, s: ObjectiveSettings, nll: Callable[[ReaderScores, float], torch.Tensor]
                    ) -> Terms:
    """A marginal likelihood as two terms of equal value: the sum's gradient is the marginal's own (each side of
    it gets its gradient from one term)."""
    return Terms(reader=nll(x.retriever_constant(), s.prior_temperature),
                 retriever=nll(x.reader_constant(), s.prior_temperature))


@objective("sequence", label_smoothing=True)
def sequence_objective(x: ReaderScores, s: ObjectiveSettings) -> Terms:
    """RAG-Sequence (Lewis et al. 2020, eq. 1): ``−log Σ_z p_R(z|x) p(y|x,z)``, both sides trained by it.

    Paper → ours: p_η(z|x) = p_R(z|x) (θ = `retriever.temperature`), p_θ(y|x,z) = exp(ll_z).
    """
    return _marginal_terms(x, s, lambda y, t: sequence_marginal_nll(y, t, s.label_smoothing))


@objective("token", label_smoothing=True)
def token_objective(x: ReaderScores, s: ObjectiveSettings) -> Terms:
    """RAG-Token (Lewis et al. 2020, eq. 2): ``−Σ_t log Σ_z p_R(z|x) p(y_t|x,z,y<t)``, both sides trained by it."""
    return _marginal_terms(x, s, lambda y, t: token_marginal_nll(y, t, s.label_smoothing))


@objective("emdr2")
def emdr2_objective(x: ReaderScores, s: ObjectiveSettings) -> Terms:
    """EMDR² (Sachan et al. 2021; Atlas §2.2): the retriever maximises the marginal with the reader held fixed,

        retriever = −log Σ_z p_R(z|x) · sg(p(y|x,z))

    and the reader on `reader_nll` (by default its own likelihood of the answer given the retrieved set,
    −log p(y|x,S_k): Atlas's reader reads the top-k together, Fusion-in-Decoder; ours reads them as a uniform
    mixture). With `reader_mix=retriever` this is RAG-Sequence exactly (a per-passage reader has no other set reading).
    Paper → ours: p_RETR(d_k|q) = p_R(z|x), p_LM(a|q,d_k) = exp(ll_z).
    """
    return Terms(reader=reader_nll(x, s), retriever=sequence_marginal_nll(x.reader_constant(), s.prior_temperature))


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
