"""The decoding benchmark runs at a tiny scale and writes fast vs thorough numbers as JSON (no timing asserts)."""

import json

import pytest
from helpers import TINY

from rag_e2e.benchmarks import decoding as bench


def test_bench_decoding_writes_answers_per_second_and_em(tmp_path, capsys):
    out = tmp_path / "decoding.json"
    assert bench.main(["beams=2", f"out={out}", "data=synthetic", "encoder=tiny_bert", "generator=tiny_bart",
                                "encoder.max_passage_length=64", "data.max_eval_questions=12", *TINY]) == 0
    result = json.loads(out.read_text())
    assert result["questions"] == 12 and result["beams"] == 2
    for decoding in ("fast", "thorough"):
        d = result[decoding]
        assert d["answers_per_s"] == pytest.approx(12 / d["seconds"]) and 0 <= d["em"] <= d["f1"] <= 1
    # fast rescores only each passage's own proposals: never more rows than thorough
    assert result["fast"]["rescored_rows"] <= result["thorough"]["rescored_rows"]
    assert "answers/s" in capsys.readouterr().out
