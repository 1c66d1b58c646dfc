"""Partial, staleness-aware refresh: re-encode only the passages that matter and patch them into a copy of the index.

Between full rebuilds a partial refresh spends a budget of m = ceil(fraction * N) passage encodings:

1. the rows training retrieved since the last refresh, most often retrieved first (they are what the loss reads,
   and their stale vectors are what mis-ranks the next batches);
2. a random probe of `probe_share * m` other rows, re-encoded to measure how far vectors drift:
   drift_j = 1 - cos(p_old_j, p_new_j);
3. the rest of the budget by predicted drift: each remaining row is assigned the drift of its nearest probe row
   (inner product of the stale unit vectors), on the assumption that drift is smooth in embedding space, and the
   rows predicted to drift most are re-encoded.

Every row encoded (retrieved, probe and predicted) is patched in; the rest keep their stale vectors. `row_steps`
records, per row, the training step of the tower that encoded it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from rag_e2e.kernels import topk_scores


@dataclass
class PartialPlan:
    """Which rows a partial refresh re-encodes, and why."""

    retrieved: torch.Tensor  # (r,) int64, most retrieved first
    probe: torch.Tensor  # (p,) int64, random
    predicted: torch.Tensor  # (q,) int64, highest predicted drift first

    @property
    def rows(self) -> torch.Tensor:
        return torch.cat([self.retrieved, self.probe, self.predicted])


def budget(n_rows: int, fraction: float) -> int:
    """Passages a partial refresh re-encodes: ceil(fraction * N), at least 1."""
    return max(1, min(n_rows, math.ceil(fraction * n_rows)))


def most_retrieved(hits: torch.Tensor, limit: int) -> torch.Tensor:
    """Rows with hits > 0, most hits first (ties: smaller row first), at most `limit` of them."""
    rows = hits.nonzero().squeeze(1)
    order = torch.sort(hits[rows], descending=True, stable=True).indices  # rows ascend, so ties keep row order
    return rows[order][:limit]


def drift(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """(m, d), (m, d) -> (m,) 1 - cos(old_j, new_j), in float64."""
    return 1.0 - torch.nn.functional.cosine_similarity(old.double(), new.double(), dim=1)


def predict_drift(p_reps: torch.Tensor, rows: torch.Tensor, probe: torch.Tensor,
                  probe_drift: torch.Tensor) -> torch.Tensor:
    """(len(rows),) predicted drift: that of each row's nearest probe row by cosine of the stale vectors."""
    if rows.numel() == 0:
        return probe_drift.new_empty(0)
    unit = torch.nn.functional.normalize(p_reps.float(), dim=1)
    _, nearest = topk_scores(unit[rows].contiguous(), unit[probe].contiguous(), 1)  # (R, 1) positions in probe
    return probe_drift[nearest.squeeze(1)]


def plan(hits: torch.Tensor, p_reps: torch.Tensor, fraction: float, probe_share: float, generator: torch.Generator,
         encode_rows) -> tuple[PartialPlan, torch.Tensor, dict[str, float]]:
    """Choose the rows to re-encode and encode them.

    Args:
        hits: (N,) how often training retrieved each row since the last refresh.
        p_reps: (N, d) the live index's stored vectors.
        fraction: budget as a fraction of N.
        probe_share: share of the budget spent on the random drift probe (at least one row).
        generator: seeds the probe (CPU).
        encode_rows: (m,) int64 rows -> (m, d) float32 vectors from the current passage tower.

    Returns:
        the plan, the (m, d) new vectors of `plan.rows` in that order, and drift statistics.
    """
    n = p_reps.shape[0]
    m = budget(n, fraction)
    n_probe = min(m, max(1, round(probe_share * m)))
    retrieved = most_retrieved(hits, m - n_probe)
    taken = torch.zeros(n, dtype=torch.bool)
    taken[retrieved] = True
    free = (~taken).nonzero().squeeze(1)
    probe = free[torch.randperm(free.numel(), generator=generator)[:n_probe]].sort().values
    taken[probe] = True
    first = torch.cat([retrieved, probe])
    first_vecs = encode_rows(first)
    probe_drift = drift(p_reps[probe], first_vecs[retrieved.numel():])
    rest = (~taken).nonzero().squeeze(1)
    n_predicted = m - first.numel()
    predicted = rest[:0]
    if n_predicted > 0 and rest.numel():
        guess = predict_drift(p_reps, rest, probe, probe_drift)
        predicted = rest[torch.sort(guess, descending=True, stable=True).indices[:n_predicted]]
    chosen = PartialPlan(retrieved, probe, predicted)
    vecs = torch.cat([first_vecs, encode_rows(predicted)]) if predicted.numel() else first_vecs
    stats = {"rows": float(chosen.rows.numel()), "retrieved_rows": float(retrieved.numel()),
             "probe_drift_mean": probe_drift.mean().item(), "probe_drift_max": probe_drift.max().item()}
    if predicted.numel():
        stats["predicted_drift"] = drift(p_reps[predicted], vecs[first.numel():]).mean().item()
    return chosen, vecs, stats


def patch(p_reps: torch.Tensor, rows: torch.Tensor, vecs: torch.Tensor) -> torch.Tensor:
    """A copy of (N, d) p_reps with `rows` replaced by `vecs` (the live index keeps searching the original)."""
    out = p_reps.clone()
    out[rows] = vecs.to(out.dtype)
    return out


def patched_fingerprint(previous: str, tower: str, rows: torch.Tensor) -> str:
    """The fingerprint of an index patched from one with `previous`: it names the tower and the exact rows it
    re-encoded, so indexes with different fresh rows never share a fingerprint."""
    digest = hashlib.sha256(f"{previous}|{tower}|".encode() + rows.sort().values.numpy().tobytes())
    return f"patched-{digest.hexdigest()[:20]}"
