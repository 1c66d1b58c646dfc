"""`_select.row_best`: each row's m best values through group maxima, against a full sort."""

import secrets

import pytest
import torch

from rag_e2e.kernels import _select


@pytest.fixture
def seed() -> int:
    value = secrets.randbits(31)
    torch.manual_seed(value)
    return value


def _scores(n_rows: int, n_cols: int, dtype: torch.dtype, tied: bool) -> torch.Tensor:
    if tied:  # a handful of distinct values: ties everywhere, also among group maxima and at the cut
        return torch.randint(-3, 4, (n_rows, n_cols)).to(dtype)
    return torch.randn(n_rows, n_cols).to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("tied", [False, True], ids=["random", "tied"])
@pytest.mark.parametrize(
    "shape_m",
    [(3, 1000, 1), (5, 1000, 29), (4, 4099, 209), (2, 50, 50), (7, 300, 299), (1, 10, 25)],
    ids=lambda s: "B{}-c{}-m{}".format(*s),
)
def test_row_best_holds_each_rows_m_best_values(dtype, tied, shape_m, seed):
    n_rows, n_cols, m = shape_m
    scores = _scores(n_rows, n_cols, dtype, tied)
    values, cols = _select.row_best(scores, m)
    m_out = min(m, n_cols)
    assert values.shape == cols.shape == (n_rows, m_out), f"seed={seed}"
    assert torch.equal(scores.gather(1, cols), values), f"seed={seed}"  # each value is its column's score
    assert (cols.sort(dim=1).values.diff(dim=1) > 0).all(), f"duplicate columns; seed={seed}"
    want = scores.double().sort(dim=1, descending=True).values[:, :m_out]
    assert torch.equal(values.double().sort(dim=1, descending=True).values, want), f"seed={seed}"


@pytest.mark.parametrize("tied", [False, True], ids=["random", "tied"])
def test_row_best_above_keeps_every_value_over_the_threshold(tied, seed):
    n_rows, n_cols, m = 6, 5003, 40
    scores = _scores(n_rows, n_cols, torch.bfloat16, tied)
    ranked = scores.double().sort(dim=1, descending=True).values
    # thresholds from "nothing above" to "more than m above", one per row
    above = torch.stack(
        [ranked[0, 0] + 1, ranked[1, 0], ranked[2, 5], ranked[3, m - 1], ranked[4, 3 * m], ranked[5, -1]]
    ).to(torch.bfloat16)[:, None]
    values, cols = _select.row_best(scores, m, above)
    assert torch.equal(scores.gather(1, cols), values), f"seed={seed}"
    for row in range(n_rows):
        over = ranked[row][ranked[row] > above[row].double()][:m]  # what the caller needs from this row
        got = values[row].double().sort(descending=True).values
        assert torch.equal(got[got > above[row].double()], over), f"row {row}; seed={seed}"


def test_row_best_above_with_nothing_over_it_returns_only_the_ungrouped_tail():
    scores = torch.zeros(2, 8003)  # 1000 groups of 8, and 3 columns in none
    values, cols = _select.row_best(scores, 10, torch.ones(2, 1))
    assert values.shape == cols.shape == (2, 3)
    assert torch.equal(cols.sort(dim=1).values, torch.tensor([[8000, 8001, 8002]] * 2))


def test_row_best_recurses_through_levels_of_groups(seed, monkeypatch):
    scores = torch.randn(3, 20000)  # 2500 groups, of them 312, of them 39: a plain topk for m = 10
    calls = []
    real = _select.row_best
    monkeypatch.setattr(_select, "row_best", lambda s, m, above=None: calls.append(s.shape[1]) or real(s, m, above))
    values, cols = _select.row_best(scores, 10)
    assert calls == [20000, 2500, 312, 39]
    want = scores.sort(dim=1, descending=True).values[:, :10]
    assert torch.equal(values.sort(dim=1, descending=True).values, want), f"seed={seed}"
