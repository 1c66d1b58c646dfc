"""The kernel benchmark writes its table as JSON (no timing asserts): every method per cell, ratios to FAISS."""

import json

import pytest

from rag_e2e.kernels import bench


@pytest.mark.skipif(bench.faiss is None, reason="needs faiss-cpu")
def test_bench_rows_and_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAG_E2E_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bench, "_grid", lambda device, quick: ([300], [1, 3], [2]))
    out = tmp_path / "topk.json"
    bench.main(["--out", str(out), "--dim", "16", "--repeats", "2"])
    result = json.loads(out.read_text())
    assert result["dtypes"] == ["float32", "bfloat16"] and result["repeats"] == 2
    cells = {}
    for r in result["rows"]:
        cells.setdefault((r["dtype"], r["B"]), {})[r["method"]] = r
    assert len(cells) == 4
    for (dtype, _), c in cells.items():
        chosen = c["topk_scores"]["chosen"]
        forced = {f"forced_{name}" for name in ("torch", "torch_pruned", "torch_fp32", "faiss")
                  if name != chosen and (name not in ("torch_pruned", "torch_fp32") or dtype == "bfloat16"
                                         and bench.topk_mod._cpu
                                         .bf16_filter_applies(bench.torch.empty(1, 1).bfloat16(),
                                                              bench.torch.empty(1, 1).bfloat16()))}
        assert set(c) == {"topk_scores", "torch_topk", "faiss_flat_cpu"} | forced  # the chosen one is not re-timed
        assert c["faiss_flat_cpu"]["vs_faiss"] == 1.0
        ours, theirs = c["topk_scores"]["ms"], c["faiss_flat_cpu"]["ms"]
        assert c["topk_scores"]["vs_faiss"] == pytest.approx(ours / theirs, rel=1e-2)
        best = min(theirs, c["torch_topk"]["ms"])
        assert c["topk_scores"]["vs_best"] == pytest.approx(ours / best, rel=1e-2)
    capsys.readouterr()
    bench.main(["--summary", str(out)])
    table = capsys.readouterr().out.strip().splitlines()
    assert len(table) == 2 + 4 and table[2].startswith("| 300 | float32 | 1 | 2 |")
