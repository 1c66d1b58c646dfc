"""benchmarks.inference: runs each variant through ask and serve and writes the JSON the README table comes from."""

import json

from helpers import tiny_config

from rag_e2e.benchmarks import inference as bench
from rag_e2e.compose import to_yaml
from rag_e2e.inference.export import pipeline_from_config


def test_bench_writes_a_row_per_variant(tmp_path, capsys):
    cfg = tiny_config()
    pipeline_from_config(cfg).save_pretrained(tmp_path / "p")
    (tmp_path / "p" / "config.yaml").write_text(to_yaml(cfg))
    out = tmp_path / "bench.json"
    assert bench.main([str(tmp_path / "p"), "questions=6", "clients=3", "variants=plain,int8,hnsw",
                                 f"out={out}"]) == 0
    result = json.loads(out.read_text())
    assert [r["variant"] for r in result["rows"]] == ["plain", "int8", "hnsw"]
    plain = result["rows"][0]
    assert plain["same_answer"] == 1.0 and plain["overlap@k"] == 1.0  # plain against itself
    for row in result["rows"]:
        assert 0 < row["ask"]["p50_ms"] <= row["ask"]["p95_ms"] and row["serve"]["qps"] > 0
        assert 0.0 <= row["em"] <= 1.0 and row["serve"]["mean_batch"] >= 1.0
    table = capsys.readouterr().out
    assert sum(line.startswith("| ") for line in table.splitlines()) == 4  # header and three rows
