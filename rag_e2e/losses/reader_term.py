"""The reader term shared by the objectives that train the retriever apart (`model.reader_mix`)."""

from __future__ import annotations

import math

import torch

from rag_e2e.losses.marginals import sequence_marginal_nll
from rag_e2e.losses.registry import ObjectiveSettings
from rag_e2e.losses.scores import ReaderScores


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

