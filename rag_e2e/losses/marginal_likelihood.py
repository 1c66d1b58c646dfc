"""The marginal-likelihood objectives: RAG-Sequence and RAG-Token (Lewis et al. 2020), and EMDR² (Sachan et al.
2021), which trains the retriever on the RAG-Sequence marginal with the reader held fixed."""

from __future__ import annotations

from collections.abc import Callable

import torch

from rag_e2e.losses.marginals import sequence_marginal_nll, token_marginal_nll
from rag_e2e.losses.reader_term import reader_nll
from rag_e2e.losses.registry import ObjectiveSettings, Terms, objective
from rag_e2e.losses.scores import ReaderScores


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

