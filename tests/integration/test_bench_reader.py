"""The reader-overhead benchmark runs at a tiny scale and writes its numbers as JSON (no timing asserts)."""

import json
import statistics

import pytest
from helpers import TINY

from rag_e2e.benchmarks import reader as bench


def test_bench_reader_writes_tokens_per_second_and_overhead(tmp_path, capsys):
    out = tmp_path / "reader.json"
    assert bench.main(["steps=2", "warmup=1", f"out={out}", "data=synthetic", "encoder=tiny_bert",
                              "generator=tiny_llama", "encoder.max_passage_length=64", *TINY]) == 0
    result = json.loads(out.read_text())
    assert len(result["seconds"]["rag"]) == len(result["seconds"]["bare"]) == 2
    assert result["reader_rows_per_step"] == 4 * 3  # batch 4 x k 3
    per_step = result["reader_tokens_per_step"]
    assert result["bare_tokens_per_s"] == pytest.approx(per_step / statistics.median(result["seconds"]["bare"]))
    assert result["overhead"] == pytest.approx(1 - result["rag_tokens_per_s"] / result["bare_tokens_per_s"])
    assert "overhead of retrieval + marginalization" in capsys.readouterr().out
