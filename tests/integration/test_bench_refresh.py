"""The refresh benchmark runs end to end at a tiny scale and writes the table's numbers as JSON (no timing asserts)."""

import json
import statistics

import pytest
import torch
from helpers import TINY

from rag_e2e.benchmarks import refresh as bench


def test_bench_refresh_writes_medians_and_ratios(tmp_path, capsys):
    out = tmp_path / "refresh.json"
    assert bench.main(["steps=3", "every=2", "rounds=1", "repeats=2", f"out={out}", *TINY,
                               "trainer.num_threads=1"]) == 0
    result = json.loads(out.read_text())
    enc, train = result["encoding"], result["training"]
    assert enc["passages"] == 40 * 3 and len(enc["seconds"]["bare"]) == len(enc["seconds"]["refresh"]) == 2
    bare, refresh = (statistics.median(enc["seconds"][name]) for name in ("bare", "refresh"))
    assert enc["ratio"] == pytest.approx(bare / refresh) and enc["bare_passages_per_s"] == pytest.approx(120 / bare)
    assert enc["partial_rows"] == 24
    assert len(enc["seconds"]["partial"]) == len(enc["seconds"]["partial_retokenized"]) == 2
    partial = statistics.median(enc["seconds"]["partial"])
    assert enc["partial_ratio"] == pytest.approx(bare / 120 * 24 / partial)
    for mode in ("off", "async", "sync"):
        assert len(train[mode]["runs"]) == 1 and all(r["steps"] == 3 for r in train[mode]["runs"])
    assert train["off"]["refreshes"] == 0 and train["sync"]["refreshes"] >= 1
    assert train["async"]["ratio_vs_off"] == train["async"]["steps_per_s"] / train["off"]["steps_per_s"]
    assert sorted(p.name for p in (tmp_path / "refresh_runs").iterdir()) == ["async-0", "off-0", "sync-0"]
    printed = capsys.readouterr().out
    assert "refresh build (passages/s)" in printed and "partial rows, cached tokens (24, passages/s)" in printed


def test_bench_refresh_at_scale_pads_the_corpus_and_reports_memory_and_disk(tmp_path, capsys):
    out = tmp_path / "scale.json"
    threads = torch.get_num_threads()
    assert bench.main(["scale=700", "steps=3", "skip=2", "train_threads=1", f"out={out}", *TINY]) == 0
    assert torch.get_num_threads() == threads  # the training half's thread count is restored
    result = json.loads(out.read_text())
    enc, [train] = result["encoding"], result["training"]
    assert train["threads"] == 1
    assert enc["passages"] == 700  # 40 entities x 3 attributes, plus 580 distractors
    assert enc["ratio"] == pytest.approx(enc["bare_s"] / enc["refresh_s"])
    assert enc["first_build_passages_per_s"] == pytest.approx(700 / (enc["refresh_s"] + enc["tokenize_s"]))
    assert enc["embeddings_disk_gb"] == pytest.approx(700 * enc["dim"] * 2 / 2**30, rel=0.2)  # float16 + headers
    assert train["stale"]["steps"] == train["async"]["steps"] == 3 and train["stale"]["refresh_wall_s"] == []
    rates = train["async"]["steps_per_s"], train["stale"]["steps_per_s"]
    assert train["async"]["ratio_vs_none"] == pytest.approx(rates[0] / rates[1])
    assert result["peak_rss_gb"] > 0.1
    assert not (tmp_path / "refresh_scale_work" / "scale_embeddings").exists()  # cleaned up
    assert "async refresh in flight" in capsys.readouterr().out


def test_bench_refresh_at_scale_with_steps_0_times_the_encoding_half_only(tmp_path, capsys):
    out = tmp_path / "scale.json"
    assert bench.main(["scale=300", "steps=0", f"out={out}", *TINY]) == 0
    result = json.loads(out.read_text())
    assert result["encoding"]["passages"] == 300 and result["training"] == []
    printed = capsys.readouterr().out
    assert "refresh build, cached tokens" in printed and "train steps/s" not in printed


def test_bench_refresh_at_scale_repeats_re_encode_every_refresh_in_abba_order(tmp_path, monkeypatch):
    from rag_e2e.retrieval import refresh as refresh_module

    encoded = []  # rows each refresh's memmap encoding computed (a reused, finished memmap would compute none)
    real = refresh_module.encode_to_memmap

    def counting(encode_rows, size, *args, **kwargs):
        rows = [0]

        def count(lo, hi):
            rows[0] += hi - lo
            return encode_rows(lo, hi)

        result = real(count, size, *args, **kwargs)
        encoded.append(rows[0])
        return result

    monkeypatch.setattr(refresh_module, "encode_to_memmap", counting)
    out = tmp_path / "scale.json"
    assert bench.main(["scale=300", "steps=0", "repeats=3", f"out={out}", *TINY]) == 0
    enc = json.loads(out.read_text())["encoding"]
    assert enc["repeats"] == 3 and len(enc["bare_runs_s"]) == len(enc["refresh_runs_s"]) == 3
    assert enc["order"] == ["bare", "refresh", "refresh", "bare", "bare", "refresh"]
    assert enc["refresh_s"] == pytest.approx(statistics.median(enc["refresh_runs_s"]))
    assert enc["ratio"] == pytest.approx(statistics.median(enc["bare_runs_s"]) / enc["refresh_s"])
    assert encoded == [300, 300, 300]  # every refresh encoded the whole corpus anew
    assert enc["embeddings_disk_gb"] == pytest.approx(300 * enc["dim"] * 2 / 2**30, rel=0.3)  # one encoding kept
