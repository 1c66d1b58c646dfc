"""What each index refresh re-encodes, and per row which tower encoded the live vectors.

scope="full" re-encodes the whole corpus. scope="partial": between full rebuilds (every `full_every`-th refresh) a
refresh re-encodes only a fraction of the corpus (`rag_e2e.retrieval.partial_refresh`: the rows training retrieved,
a random drift probe, and the rows predicted to drift most) and patches them into a copy of the live vectors.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rag_e2e.errors import ConfigError


class RefreshScope:
    """The scope policy, and the per-row state it reads and writes: `row_steps` records per row the step of the tower
    that encoded it, `hits` how often training retrieved it since the last refresh.

    Args:
        n_rows: passages in the corpus.
        kind: "full" or "partial".
        partial_fraction: partial: share of the corpus re-encoded per partial refresh.
        full_every: partial: every full_every-th refresh is a full rebuild (0: never).
        probe_share: partial: share of a partial refresh's budget spent on the random drift probe.
    """

    def __init__(self, n_rows: int, kind: str = "full", partial_fraction: float = 0.1, full_every: int = 4,
                 probe_share: float = 0.25):
        self.kind, self.partial_fraction, self.full_every = kind, partial_fraction, full_every
        self.probe_share = probe_share
        self.row_steps = torch.zeros(n_rows, dtype=torch.int64)  # step of the tower that encoded each live row
        self.hits = torch.zeros(n_rows, dtype=torch.int64)  # rows retrieved in training since the last refresh

    def check(self, mode: str, world_size: int, embeddings_dir: Path | None) -> None:
        if self.kind != "partial" or mode in ("off", "stale"):
            return
        if world_size > 1:
            raise ConfigError("refresh.scope=partial runs in a single process for now (world size "
                              f"{world_size}); use refresh.scope=full under DDP")
        if embeddings_dir is not None:
            raise ConfigError("refresh.scope=partial patches vectors in RAM; unset index.embeddings_dir or use "
                              "refresh.scope=full")

    def partial_due(self, version: int) -> bool:
        """Whether refresh number `version` (1, 2, ...) is a partial one."""
        return self.kind == "partial" and (self.full_every == 0 or version % self.full_every != 0)

    def count_hits(self, pl_module) -> None:
        """Partial scope: let the model count the rows training retrieves into `self.hits`."""
        if self.kind == "partial":
            pl_module.rag.retrieval_hits = self.hits

    def take_hits(self, pl_module) -> torch.Tensor:
        """The rows retrieved since the last refresh; counting starts again from zero."""
        hits, self.hits = self.hits, torch.zeros_like(self.hits)
        self.count_hits(pl_module)
        return hits

    def mark_encoded(self, rows: torch.Tensor | None, step: int) -> float:
        """`rows` (None: all) of the live index are now encoded by the tower of `step`; returns the share of rows
        that are (the record's fresh_fraction)."""
        if rows is None:
            self.row_steps.fill_(step)
        else:
            self.row_steps[rows] = step
        return (self.row_steps == step).double().mean().item()

    def patched(self, index_step: int) -> bool:
        """A partial refresh left rows encoded by an older tower than the index's."""
        return bool(self.row_steps.ne(index_step).any())

    def state_dict(self) -> dict:
        return {"row_steps": self.row_steps.clone(), "hits": self.hits.clone()}

    def load_state_dict(self, state: dict, index_step: int) -> None:
        """From a checkpoint's refresh state; one written before partial refresh existed had every row at
        `index_step`."""
        if "row_steps" in state:  # written since partial refresh
            self.row_steps.copy_(state["row_steps"])
            self.hits.copy_(state["hits"])
        else:
            self.row_steps.fill_(index_step)
