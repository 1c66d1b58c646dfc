"""The CPU search tuner: measured once per shape class and host, remembered atomically, forced by a key."""

import json

import pytest
import torch

from rag_e2e import tuning
from rag_e2e.kernels import _autotune, topk_scores
from rag_e2e.kernels import topk as topk_mod


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("RAG_E2E_CACHE", str(tmp_path))
    monkeypatch.setattr(topk_mod, "_topk_kernel", None)  # no Triton: the CPU dispatch as users get it
    _autotune.forget()
    _autotune.force(None)
    yield
    _autotune.forget()
    _autotune.force(None)


def _spy(monkeypatch, seconds: dict[str, float]) -> list[str]:
    """Replace the timing with fixed seconds per candidate; returns the list of backends each probe timed."""
    probed = []

    def fake_best_of(candidates, repeats=2):
        probed.extend(candidates)
        for run in candidates.values():
            run()  # the probe really searches: it must run on the cut inputs
        return {name: seconds[name] for name in candidates}

    monkeypatch.setattr(_autotune, "best_of", fake_best_of)
    return probed


def test_the_fastest_candidate_is_chosen_once_and_remembered_per_host(monkeypatch, tmp_path):
    probed = _spy(monkeypatch, {"torch": 0.3, "torch_fp32": 0.2, "faiss": 0.1})
    queries, docs = torch.randn(16, 32), torch.randn(500, 32)
    names = _autotune.available(queries, docs)
    want = "faiss" if "faiss" in names else "torch"
    for _ in range(3):
        assert _autotune.choose(queries, docs, 5, topk_mod._search) == want
    assert sorted(probed) == sorted(names)  # one probe for three searches
    table = json.loads((tmp_path / "tuning" / "topk_backend.json").read_text())
    entry = table[tuning.host_string()][_autotune.shape_class(queries, docs, 5)]
    assert entry["choice"] == want and set(entry["seconds"]) == set(names)
    _autotune.forget()  # a new process on the same host reads the file: no probe
    assert _autotune.choose(torch.randn(13, 32), docs, 7, topk_mod._search) == want  # same buckets (B<=16, k<=8)
    assert sorted(probed) == sorted(names)
    assert _autotune.shape_class(torch.randn(17, 32), docs, 5) != _autotune.shape_class(queries, docs, 5)


def test_another_hosts_entry_is_not_reused_and_the_file_keeps_it(monkeypatch, tmp_path):
    probed = _spy(monkeypatch, {"torch": 0.1, "torch_fp32": 0.2, "faiss": 0.3})
    queries, docs = torch.randn(8, 16), torch.randn(300, 16)
    path = tmp_path / "tuning" / "topk_backend.json"
    path.parent.mkdir(parents=True)
    key = _autotune.shape_class(queries, docs, 3)
    path.write_text(json.dumps({"Another CPU | 2 cpus | 2 threads | torch 0": {key: {"choice": "faiss"}}}))
    assert _autotune.choose(queries, docs, 3, topk_mod._search) == "torch"  # measured here, not the stale "faiss"
    assert probed
    table = json.loads(path.read_text())
    assert table["Another CPU | 2 cpus | 2 threads | torch 0"][key]["choice"] == "faiss"
    assert table[tuning.host_string()][key]["choice"] == "torch"


def test_a_failed_write_leaves_the_previous_file_whole(monkeypatch, tmp_path):
    _spy(monkeypatch, {"torch": 0.1, "torch_fp32": 0.2, "faiss": 0.3})
    path = tmp_path / "tuning" / "topk_backend.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"kept": {}}\n')

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        _autotune.choose(torch.randn(4, 16), torch.randn(200, 16), 3, topk_mod._search)
    assert path.read_text() == '{"kept": {}}\n'
    assert [p.name for p in path.parent.iterdir()] == ["topk_backend.json"]  # no half-written file beside it


def test_a_forced_backend_skips_the_probe_and_a_bad_one_is_refused(monkeypatch):
    probed = _spy(monkeypatch, {"torch": 0.1, "torch_fp32": 0.2, "faiss": 0.3})
    queries, docs = torch.randn(4, 16), torch.randn(200, 16)
    _autotune.force("torch")
    assert _autotune.choose(queries, docs, 3, topk_mod._search) == "torch" and probed == []
    scores, rows = topk_scores(queries, docs, 3)
    want = (queries.double() @ docs.double().T).topk(3, dim=1)
    torch.testing.assert_close(scores.double(), want.values, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="must be 'auto' or one of"):
        _autotune.force("gpu")
    _autotune.force("faiss")
    monkeypatch.setattr(_autotune._cpu, "faiss", None)
    with pytest.raises(ValueError, match="faiss is not importable"):
        _autotune.choose(queries, docs, 3, topk_mod._search)


def test_the_probe_is_cut_to_a_bounded_size(monkeypatch):
    seen = []

    def search(name, q, d, k):
        seen.append((q.shape[0], d.shape[0], k))

    monkeypatch.setattr(_autotune, "best_of", lambda candidates, repeats=2: {
        name: (run(), 0.1 * i)[1] for i, (name, run) in enumerate(candidates.items())})
    monkeypatch.setattr(_autotune, "available", lambda q, d: ["torch", "faiss"])
    docs = torch.randn(1, 768).expand(300_000, 768)  # a large N without its memory
    _autotune.choose(torch.randn(1000, 768), docs, 100, search)
    b, rows, k = seen[0]
    assert b == _autotune.PROBE_QUERIES and rows == _autotune.PROBE_MACS // (b * 768) and k == 100
    assert b * rows * 768 <= _autotune.PROBE_MACS
    seen.clear()
    _autotune.choose(torch.randn(1, 768), docs, 10, search)
    assert seen[0] == (1, _autotune.PROBE_MAX_ROWS, 10)


def test_probe_times_are_extrapolated_to_the_real_size(monkeypatch):
    """A fixed cost weighs more in the small probe than in the search: the choice follows the time at the real N."""
    cost = {"torch": (0.02, 1e-7), "faiss": (0.001, 5e-7)}  # seconds = fixed + per_row * rows
    last_rows = {}

    def search(name, q, d, k):
        last_rows[name] = d.shape[0]

    def fake_best_of(candidates, repeats=2):
        out = {}
        for name, run in candidates.items():
            run()
            fixed, per_row = cost[name]
            out[name] = fixed + per_row * last_rows[name]
        return out

    monkeypatch.setattr(_autotune, "best_of", fake_best_of)
    monkeypatch.setattr(_autotune, "available", lambda q, d: ["torch", "faiss"])
    queries, docs = torch.randn(256, 768), torch.randn(1, 768).expand(300_000, 768)
    probe_rows = _autotune.PROBE_MACS // (256 * 768)
    assert fake_best_of({n: (lambda n=n: search(n, queries, docs[:probe_rows], 100)) for n in cost})["faiss"] < \
        fake_best_of({n: (lambda n=n: search(n, queries, docs[:probe_rows], 100)) for n in cost})["torch"]
    seconds = _autotune._measure(queries, docs, 100, ["torch", "faiss"], search)
    assert seconds == pytest.approx({name: f + r * 300_000 for name, (f, r) in cost.items()}, rel=1e-9)
    assert _autotune.choose(queries, docs, 100, search) == "torch"
