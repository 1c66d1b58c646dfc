"""RAG marginal likelihoods (Lewis et al., 2020) and the retriever-training objectives, as pure functions.

    scores.py               ReaderScores: what the forward pass gives every objective; tensor conventions
    marginals.py            retrieval prior, RAG-Sequence / RAG-Token NLL (parity with transformers' RAG heads)
    registry.py             ObjectiveSettings, Terms, OBJECTIVES (`model.loss`) and `@objective`; notation
    reader_term.py          the reader term of the objectives that train the retriever apart (`model.reader_mix`)
    marginal_likelihood.py  sequence, token, emdr2
    distillation.py         pdist, loop, lsr
    gumbel.py               gumbel_topk

The objectives (``model.loss``) are registered in ``OBJECTIVES``; each maps `ReaderScores` to `Terms`. This package
is the public API: import from `rag_e2e.losses`.
"""

from rag_e2e.losses.marginals import (
    doc_log_prior,
    marginalize,
    rag_sequence_nll,
    rag_token_nll,
    sequence_marginal_nll,
    token_marginal_nll,
)
from rag_e2e.losses.reader_term import READER_MIXES, reader_nll, set_nll
from rag_e2e.losses.registry import OBJECTIVES, Objective, ObjectiveSettings, ObjectiveSpec, Terms, objective
from rag_e2e.losses.scores import ReaderScores, scores_from_logits

# Importing a family registers its objectives; this order is the order `model.loss` lists them in.
# isort: off
from rag_e2e.losses.marginal_likelihood import sequence_objective, token_objective, emdr2_objective
from rag_e2e.losses.distillation import pdist_objective, loop_objective, lsr_objective
from rag_e2e.losses.gumbel import gumbel_topk_objective
# isort: on

__all__ = [
    "OBJECTIVES", "READER_MIXES", "Objective", "ObjectiveSettings", "ObjectiveSpec", "ReaderScores", "Terms",
    "doc_log_prior", "emdr2_objective", "gumbel_topk_objective", "loop_objective", "lsr_objective", "marginalize",
    "objective", "pdist_objective", "rag_sequence_nll", "rag_token_nll", "reader_nll", "scores_from_logits",
    "sequence_marginal_nll", "sequence_objective", "set_nll", "token_marginal_nll", "token_objective",
]
