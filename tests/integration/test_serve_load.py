"""benchmarks.serve_load: a short run on the tiny pipeline writes the table's JSON, and its goal check can fail."""

import json

from helpers import tiny_config

from rag_e2e.benchmarks import serve_load
from rag_e2e.compose import to_yaml
from rag_e2e.inference.export import pipeline_from_config


def test_a_short_run_writes_one_row_per_level_and_the_goal(tmp_path, capsys):
    cfg = tiny_config()
    pipeline_from_config(cfg).save_pretrained(tmp_path / "p")
    (tmp_path / "p" / "config.yaml").write_text(to_yaml(cfg))
    out = tmp_path / "load.json"
    assert serve_load.main([str(tmp_path / "p"), "seconds=1", "levels=1,4", "clients=2", f"out={out}",
                            "max_queue_wait_ms=auto", "max_batch=4"]) == 0
    result = json.loads(out.read_text())
    assert result["capacity_answers_per_s"] > 0 and result["unloaded"]["p99_ms"] >= result["unloaded"]["p50_ms"] > 0
    assert [row["level"] for row in result["levels"]] == [1.0, 4.0]
    budget = float(result["serve_options"]["max_queue_wait_ms"])  # auto: half the unloaded median
    assert abs(budget - result["unloaded"]["p50_ms"] / 2) < 0.1
    for row in result["levels"]:
        assert row["requests"] > 0 and row["rss_max_mb"] > 10 and row["tracebacks"] == 0
        assert 0.0 <= row["share_503"] + row["share_504"] <= 1.0
    assert set(result["goal"]) == {"p99_at_top_within_2x_unloaded", "rss_flat", "no_other_5xx", "no_traceback",
                                   "met"}
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.lstrip().startswith(("1×", "4×")) for line in lines) == 2


def test_the_goal_fails_on_a_slow_top_level_a_growing_rss_or_an_undesigned_5xx():
    def row(level, p99, rss, other=None):
        return {"level": level, "p99_ms": p99, "rss_max_mb": rss, "other_status": other or {}, "tracebacks": 0}

    base = {"unloaded": {"p99_ms": 100.0}}
    ok = serve_load.goal({**base, "levels": [row(1, 120, 500), row(16, 199, 505)]})
    assert ok["met"]
    assert not serve_load.goal({**base, "levels": [row(1, 120, 500), row(16, 201, 505)]})["met"]
    assert not serve_load.goal({**base, "levels": [row(1, 120, 500), row(16, 150, 600)]})["rss_flat"]
    assert not serve_load.goal({**base, "levels": [row(1, 120, 500, {"500": 1}), row(16, 150, 500)]})["no_other_5xx"]
    assert not serve_load.goal({**base, "levels": [row(1, 120, 500), row(16, None, 500)]})["met"]  # none answered


def test_summarize_counts_statuses_and_latency_of_the_answered_only():
    results = [(200, 0.010, "{}"), (200, 0.030, "{}"), (503, 0.001, "{}"), (504, 5.0, "{}"), (0, 0.2, "reset"),
               (500, 0.1, "Traceback (most recent call last)")]
    s = serve_load.summarize(results, seconds=2.0)
    assert s["requests"] == 6 and s["answers_per_s"] == 1.0
    assert 10.0 <= s["p50_ms"] <= 30.0 and s["p99_ms"] <= 30.0  # the 504's 5 s is not an answered latency
    assert s["share_503"] == s["share_504"] == 1 / 6
    assert s["other_status"] == {"0": 1, "500": 1} and s["tracebacks"] == 1
