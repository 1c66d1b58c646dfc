"""Passages sharded across DDP ranks: each rank indexes a contiguous slice, and a collective search returns what one
process searching the whole corpus would.

Tie rule (as `rag_e2e.kernels.topk_scores`): scores compare as fp32, -0.0 equals +0.0, and equal scores list the
smaller global row first. Merging only moves the scores the shards computed, never recomputes them, so the result is
bitwise that of one process when the local index scores a (query, passage) pair to the same bits whatever the batch
and shard shapes. The CPU paths do not quite (MKL and the Triton interpreter's numpy matmul round by shape and tile
position): there scores can differ from one process by an ulp or two, and rows only among near-ties.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from rag_e2e.retrieval.index_base import Index

_PAD_ROW = torch.iinfo(torch.int64).max  # ranks after every real row, so padding loses every tie


class Traffic:
    """Payload bytes this process sent to other ranks through the collectives below, by purpose (for benchmarks:
    `python -m rag_e2e.benchmarks.distributed`). Reset with `TRAFFIC.reset()`."""

    def __init__(self):
        self.sent: dict[str, int] = {}

    def add(self, what: str, n_bytes: int) -> None:
        self.sent[what] = self.sent.get(what, 0) + int(n_bytes)

    def reset(self) -> None:
        self.sent = {}

    @property
    def total(self) -> int:
        return sum(self.sent.values())


TRAFFIC = Traffic()


def shard_bounds(num_passages: int, world_size: int, rank: int) -> tuple[int, int]:
    """Rows [start, end) of rank's shard: contiguous, sizes differ by at most one, the first ranks get the extra rows.

    Raises:
        ValueError: a rank would get no passages (num_passages < world_size), or rank is not in [0, world_size).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
    if num_passages < world_size:
        raise ValueError(f"cannot shard {num_passages} passages over {world_size} ranks: every rank needs at least "
                         "one passage")  # fmt: skip
    base, extra = divmod(num_passages, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def merge_topk(scores: torch.Tensor, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Global top-k of candidate lists, e.g. every shard's top-k side by side.

    Args:
        scores: (B, C) candidate scores, C = shards * k in a sharded search; any order.
        rows: (B, C) int64 global row ids of the candidates, unique within a query.
        k: results per query, 1 <= k <= C.

    Returns:
        scores (B, k) descending, and rows (B, k); equal scores list the smaller row first.
    """
    positions = _topk_positions(scores, rows, k)
    return scores.gather(1, positions), rows.gather(1, positions)


def all_gather_objects(items: list, group: dist.ProcessGroup | None = None) -> list:
    """Every rank's list concatenated in rank order (collective); `items` itself without torch.distributed."""
    if not dist.is_available() or not dist.is_initialized():
        return list(items)
    parts: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(parts, list(items), group=group)
    return [item for part in parts for item in part]


class ShardedIndex(Index):
    """This rank's `Index` over rows [start, start + local.size) of a corpus of `total_size` passages.

    `search` and `search_with_vectors` are collective: every rank of `group` calls them, each with its own queries
    (batch sizes may differ, 0 included) and the same k. Row ids are global; `size` is the global N.
    """

    def __init__(self, local: Index, start: int, total_size: int, group: dist.ProcessGroup | None = None):
        # No Index.__init__: this rank holds only local.p_reps, so there is no (N, d) matrix to keep.
        if not 0 <= start <= total_size - local.size:
            raise ValueError(f"shard rows [{start}, {start + local.size}) do not fit in a corpus of {total_size}")
        self.local, self.start, self.total_size, self.group = local, start, total_size, group

    @property
    def size(self) -> int:
        return self.total_size

    @property
    def dim(self) -> int:
        return self.local.dim

    @property
    def kind(self) -> str:
        return self.local.kind

    @property
    def params(self) -> dict[str, int]:
        return self.local.params

    @property
    def end(self) -> int:
        return self.start + self.local.size

    @property
    def p_reps(self) -> torch.Tensor:
        # Refuse rather than hand out the local block: indexing it with global rows would silently be wrong.
        raise RuntimeError(f"a ShardedIndex holds only rows [{self.start}, {self.end}): use `.local.p_reps` for "
                           "those, or search_with_vectors for the vectors of search results")  # fmt: skip

    def search(self, q_reps: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Collective top-k over the whole corpus.

        Args:
            q_reps: (B, d) this rank's queries; B may differ across ranks, and be 0.
            k: passages per query, the same on every rank, 1 <= k <= size.

        Returns:
            scores (B, k) float32 descending, and global rows (B, k) int64, on q_reps.device.
        """
        scores, rows, _, _ = self._search_mine(q_reps, k)
        return scores, rows

    def search_with_vectors(self, q_reps: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Collective `search` that also returns the (B, k, d) float32 vectors of the result rows.

        Only vectors held by another rank travel, once per distinct row a rank asked for.
        """
        scores, rows, owners, starts = self._search_mine(q_reps, k)
        return scores, rows, self._fetch_vectors(rows, owners, starts)

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, k) global rows, all in this rank's shard -> (B, k, d) vectors; other rows live on other ranks."""
        local = (rows >= self.start) & (rows < self.end)
        if not bool(local.all()):
            raise ValueError(f"rows outside this rank's shard [{self.start}, {self.end}) are on other ranks: use "
                             "search_with_vectors to get the vectors of search results")  # fmt: skip
        return self.local.gather(rows - self.start)

    def _search_mine(self, q_reps: torch.Tensor,
                     k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
        """The merged top-k of this rank's queries.

        Every rank scores every rank's queries on its shard (the queries are all-gathered), then sends each rank only
        the candidates of that rank's own queries (all-to-all), which the asking rank merges.

        Returns:
            scores (B, k), rows (B, k) and owners (B, k): the rank holding each row; and every rank's shard start.
        """
        sizes, starts = self._gather_sizes(q_reps, k)
        rank, world = _rank_world(self.group)
        if sum(sizes) == 0:  # every rank sees the same sizes, so all skip the remaining collectives together
            scores = torch.empty((0, k), device=q_reps.device)
            return scores, scores.long(), scores.long(), starts
        q_all = torch.cat(_all_gather_padded(q_reps.detach().float(), sizes, self.group, "queries"))  # (B_total, d)
        cand_scores, cand_rows = _local_candidates(self.local, self.start, q_all, k)  # (B_total, k) each
        # Block r (rank r's queries) goes to rank r; what arrives is one (B, k) block from every rank, in rank order.
        mine = sizes[rank]
        got_scores = _all_to_all(cand_scores, sizes, self.group, "candidates").view(world, mine, k)
        got_rows = _all_to_all(cand_rows, sizes, self.group, "candidates").view(world, mine, k)
        got_scores = got_scores.permute(1, 0, 2).reshape(mine, world * k)  # (B, world * k): rank r's at r*k...
        got_rows = got_rows.permute(1, 0, 2).reshape(mine, world * k)
        positions = _topk_positions(got_scores, got_rows, k)  # (B, k)
        owners = torch.div(positions, k, rounding_mode="floor")  # candidate block r came from rank r
        return got_scores.gather(1, positions), got_rows.gather(1, positions), owners, starts

    def _gather_sizes(self, q_reps: torch.Tensor, k: int) -> tuple[list[int], list[int]]:
        """Every rank's batch size and shard start; checks k, d and the shard layout on every rank alike, so all
        raise or none."""
        if q_reps.ndim != 2:
            raise ValueError(f"q_reps must be (B, d), got shape {tuple(q_reps.shape)}")
        mine = torch.tensor([q_reps.shape[0], k, q_reps.shape[1], self.start, self.end], device=q_reps.device)
        per_rank = torch.stack(_all_gather(mine, self.group, "sizes")).tolist()  # (world, 5)
        sizes, ks, dims, starts, ends = (list(column) for column in zip(*per_rank))
        if len(set(ks)) > 1:
            raise ValueError(f"every rank must search with the same k; got k per rank {ks}")
        if not 1 <= k <= self.size:
            raise ValueError(f"k={k} must be between 1 and the number of passages N={self.size}")
        if any(d != self.dim for d in dims):
            raise ValueError(f"queries must have d={self.dim}; got d per rank {dims}")
        if starts != [0, *ends[:-1]] or ends[-1] != self.size:
            raise ValueError(f"shards {list(zip(starts, ends))} (in rank order) must tile the corpus [0, {self.size})")
        return sizes, starts

    def _fetch_vectors(self, rows: torch.Tensor, owners: torch.Tensor, starts: list[int]) -> torch.Tensor:
        """(B, k, d) float32 vectors of this rank's result rows: its own shard's read locally, the others requested
        from their holders (collective: every rank calls it after the same search).

        Each rank sends every other rank the distinct local rows it needs from it (counts first, then the rows), and
        answers with those rows' vectors: 8 bytes per row asked for, 4d per vector sent.
        """
        rank, world = _rank_world(self.group)
        out = torch.zeros((*rows.shape, self.dim), dtype=torch.float32, device=rows.device)
        flat_rows, flat_owners = rows.reshape(-1), owners.reshape(-1)
        held = flat_owners == rank
        if bool(held.any()):
            out.view(-1, self.dim)[held] = self.local.gather((flat_rows[held] - self.start)[None]).squeeze(0).to(out)
        if world == 1:
            return out
        wanted, inverse = [], []  # per rank: distinct local rows asked of it, and where each result position maps
        for other in range(world):
            ask = (flat_owners == other) & (other != rank)
            unique, inv = torch.unique(flat_rows[ask] - starts[other], return_inverse=True)
            wanted.append(unique)
            inverse.append((ask.nonzero().squeeze(1), inv))
        send_counts = torch.tensor([w.numel() for w in wanted], dtype=torch.int64)
        recv_counts = _all_to_all_v(send_counts, [1] * world, [1] * world, self.group, "requests")
        requests = _all_to_all_v(torch.cat(wanted).cpu(), send_counts.tolist(), recv_counts.tolist(), self.group,
                                 "requests")  # local rows other ranks asked this one for
        answer = self.local.gather(requests[None].to(rows.device)).squeeze(0).to(torch.float32).cpu()  # (R, d)
        vectors = _all_to_all_v(answer, recv_counts.tolist(), send_counts.tolist(), self.group, "vectors")
        offsets = [0, *torch.cumsum(send_counts, 0).tolist()]
        for other, (positions, inv) in enumerate(inverse):
            if positions.numel():
                out.view(-1, self.dim)[positions] = vectors[offsets[other] + inv].to(out)
        return out


def _topk_positions(scores: torch.Tensor, rows: torch.Tensor, k: int) -> torch.Tensor:
    """(B, C) scores and rows -> (B, k) positions of the top-k, by score then smaller row (the kernel's tie rule)."""
    if scores.shape != rows.shape or scores.ndim != 2:
        raise ValueError(f"scores and rows must both be (B, C); got {tuple(scores.shape)} and {tuple(rows.shape)}")
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k={k} must be between 1 and the number of candidates C={scores.shape[1]}")
    # Two stable sorts: by row, then by score, so that equal scores keep ascending rows (sort treats -0.0 == +0.0).
    by_row = rows.argsort(dim=1, stable=True)
    by_score = scores.gather(1, by_row).argsort(dim=1, descending=True, stable=True)[:, :k]
    return by_row.gather(1, by_score)


def _local_candidates(local: Index, start: int, q_reps: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The shard's top-min(k, shard size) for each query, as global rows, padded to k columns with losers.

    Returns:
        scores (B, k) float32 and rows (B, k) int64; padding is (-inf, _PAD_ROW).
    """
    k_local = min(k, local.size)
    scores, rows = local.search(q_reps, k_local)
    pad = k - k_local  # a shard smaller than k: pad so that every rank sends the same shape
    scores = torch.nn.functional.pad(scores.float(), (0, pad), value=float("-inf"))
    rows = torch.nn.functional.pad(rows.long() + start, (0, pad), value=_PAD_ROW)
    return scores, rows


# ---- collectives: no-ops in a single process; gloo gets CPU tensors ----


def _rank_world(group: dist.ProcessGroup | None) -> tuple[int, int]:
    if not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def _comm_device(tensor: torch.Tensor, group: dist.ProcessGroup | None) -> torch.device:
    # gloo's all_to_all takes CPU tensors only, NCCL CUDA tensors only; a mixed group picks by the tensor's device.
    backend = str(dist.get_backend(group))
    if backend == "gloo":
        return torch.device("cpu")
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return tensor.device


def _all_gather(tensor: torch.Tensor, group: dist.ProcessGroup | None, what: str = "other") -> list[torch.Tensor]:
    """Every rank's tensor (same shape on all ranks), on this tensor's device."""
    _, world = _rank_world(group)
    if world == 1:
        return [tensor]
    sent = tensor.to(_comm_device(tensor, group)).contiguous()
    TRAFFIC.add(what, sent.numel() * sent.element_size() * (world - 1))
    parts = [torch.empty_like(sent) for _ in range(world)]
    dist.all_gather(parts, sent, group=group)
    return [p.to(tensor.device) for p in parts]


def _all_gather_padded(tensor: torch.Tensor, sizes: list[int], group: dist.ProcessGroup | None,
                       what: str = "other") -> list[torch.Tensor]:
    """Every rank's (sizes[r], ...) tensor; padded to max(sizes) rows for the collective, trimmed after."""
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    return [part[:n] for part, n in zip(_all_gather(padded, group, what), sizes)]


def _all_to_all_v(send: torch.Tensor, send_counts: list[int], recv_counts: list[int],
                  group: dist.ProcessGroup | None, what: str) -> torch.Tensor:
    """Uneven all-to-all along dim 0: send_counts[r] rows of `send` (in rank order) go to rank r, recv_counts[r]
    rows arrive from rank r; returns the received rows, in rank order."""
    rank, _ = _rank_world(group)
    sent = send.to(_comm_device(send, group)).contiguous()
    received = sent.new_empty((sum(recv_counts), *send.shape[1:]))
    row_bytes = sent[:1].numel() * sent.element_size() if sent.shape[0] else 0
    TRAFFIC.add(what, (sum(send_counts) - send_counts[rank]) * row_bytes)
    dist.all_to_all_single(received, sent, recv_counts, send_counts, group=group)
    return received.to(send.device)


def _all_to_all(send: torch.Tensor, sizes: list[int], group: dist.ProcessGroup | None,
                what: str = "other") -> torch.Tensor:
    """(sum(sizes), ...) with block r meant for rank r -> (world * sizes[rank], ...): what every rank sent here."""
    rank, world = _rank_world(group)
    if world == 1:
        return send
    sent = send.to(_comm_device(send, group)).contiguous()
    TRAFFIC.add(what, (sent.shape[0] - sizes[rank]) * sent[:1].numel() * sent.element_size())
    received = sent.new_empty((world * sizes[rank], *send.shape[1:]))
    dist.all_to_all_single(received, sent, [sizes[rank]] * world, sizes, group=group)
    return received.to(send.device)
