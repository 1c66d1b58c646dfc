"""The frozen-reader benchmark runs at a tiny scale: three variants, identical warm/cold outputs, JSON (no timing
asserts)."""

import json

import pytest
from helpers import TINY

from rag_e2e.benchmarks import frozen_reader as bench


def test_bench_frozen_reader_times_three_variants_and_checks_the_cache_is_exact(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAG_E2E_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "frozen.json"
    assert bench.main(["questions=5", f"out={out}", "data=synthetic", "encoder=tiny_bert",
                                     "generator=tiny_llama", "generator.train=false", "eval.num_beams=1",
                                     *TINY]) == 0
    result = json.loads(out.read_text())
    name = result["measured_dtype"]
    assert name in {"float32", "bfloat16"}
    assert list(result["variants"]) == ["float32", f"{name}, cold disk cache", f"{name}, warm disk cache"]
    assert result["warm_equals_cold"] is True and result["rows"] == 5 * 3  # questions x k
    for v in result["variants"].values():
        assert v["answers_per_s"] == pytest.approx(5 / v["answer_s"], rel=1e-2)
        assert v["scored_rows_per_s"] == pytest.approx(15 / v["score_s"], rel=1e-2)
    if name == "float32":  # the same dtype: the memoized reader must reproduce the plain one
        assert result["dtype_vs_float32"]["answers_agreeing"] == 1.0
    assert "warm cache outputs identical to the cold run's: True" in capsys.readouterr().out


def test_float32_measured_fastest_keeps_all_three_variants(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("RAG_E2E_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bench, "frozen_reader_dtype", lambda *a, **k: torch.float32)
    out = tmp_path / "frozen.json"
    bench.main(["questions=3", f"out={out}", "data=synthetic", "encoder=tiny_bert",
                              "generator=tiny_llama", "generator.train=false", "eval.num_beams=1", *TINY])
    result = json.loads(out.read_text())
    assert list(result["variants"]) == ["float32", "float32, cold disk cache", "float32, warm disk cache"]
    assert result["dtype_vs_float32"]["answers_agreeing"] == 1.0
