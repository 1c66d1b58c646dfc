"""The objective registry (`model.loss`): the settings every objective reads, the two terms it returns, `@objective`.

Every objective reads the same reader scores and returns two terms: the reader's, whose gradient reaches only the
reader (doc scores held constant), and the retriever's, whose gradient reaches only the doc scores (reader outputs
held constant). Training minimises their sum; they are logged apart.

Notation across the papers, mapped to ours (B questions, k retrieved passages each):
  s_z = doc_scores[:, z] = q·d_z;   p_R(z|x) = softmax_z(s_z / θ), θ = `retriever.temperature`
  ll_z = Σ_t log p(y_t|x,z,y<t), the reader's answer log-likelihood given passage z alone (`answer_ll`)
  reading a set S of passages: a per-passage reader reads S as the uniform mixture
      log p(y|x,S) = logsumexp_{z∈S} ll_z − log|S|
  sg(·) = stop-gradient (.detach())
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rag_e2e.losses.scores import ReaderScores


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

