"""Paired bootstrap comparisons: the interval against closed forms, per-question pooling over seeds, the report."""

import json
import math
from itertools import product

import numpy as np
import pytest

from rag_e2e.eval.paired import bootstrap_ci, paired_difference, per_question, question_score


def _exact_quantile(d, q):
    """The q-quantile of the exact bootstrap distribution of the mean of `d` (all n^n resamples, n tiny)."""
    means = sorted(float(np.mean([d[i] for i in idx])) for idx in product(range(len(d)), repeat=len(d)))
    return means[min(int(math.ceil(q * len(means))) - 1, len(means) - 1)]


@pytest.mark.parametrize("d", [[0.0, 0.0, 1.0], [-1.0, 0.0, 1.0, 1.0], [0.2, 0.5, 0.9, -0.4]])
def test_interval_matches_the_exact_bootstrap_distribution_on_tiny_cases(d):
    # n^n equally likely resamples: their 2.5% and 97.5% quantiles are the percentile interval exactly. The
    # Monte Carlo interval (10,000 resamples) lands on the same support points: each quantile here sits at least
    # 1% of mass away from a jump, over 5 standard errors of the resampling.
    low, high = bootstrap_ci(d, resamples=10_000, seed=1)
    assert low == pytest.approx(_exact_quantile(d, 0.025), abs=0.02)
    assert high == pytest.approx(_exact_quantile(d, 0.975), abs=0.02)


def test_interval_width_follows_the_bootstrap_standard_error():
    # Closed form: the bootstrap variance of a mean is sigma_hat^2 / n (sigma_hat with divisor n); for n = 400 the
    # mean is close to normal, so the 95% interval is mean +- 1.96 sigma_hat / sqrt(n), here within 5%.
    rng = np.random.default_rng(0)
    d = rng.choice([-1.0, 0.0, 1.0], size=400, p=[0.1, 0.7, 0.2])
    low, high = bootstrap_ci(d, resamples=20_000, seed=2)
    half = 1.96 * d.std(ddof=0) / math.sqrt(len(d))
    assert (high - low) / 2 == pytest.approx(half, rel=0.05)
    assert (low + high) / 2 == pytest.approx(d.mean(), abs=0.1 * half)


def test_a_constant_difference_has_a_degenerate_interval():
    assert bootstrap_ci([0.5] * 7) == (0.5, 0.5)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def _record(qid, rank, answer, gold="the cat sat"):
    return {"qid": qid, "gold_rank": rank, "answer": answer, "gold": [gold]}


def test_question_scores_and_seed_pooling():
    assert question_score(_record("a", 3, None), "recall@5") == 1.0
    assert question_score(_record("a", 6, None), "recall@5") == 0.0
    assert question_score(_record("a", None, None), "mrr") == 0.0
    assert question_score(_record("a", 4, None), "mrr") == 0.25
    assert question_score(_record("a", 1, None), "f1") is None  # not answered: no answer metric
    assert question_score(_record("a", 1, "The cat sat."), "em") == 1.0
    assert question_score(_record("a", 1, "cat"), "f1") == pytest.approx(2 / 3)  # "cat" vs "cat sat" (no article)
    seeds = [[_record("a", 1, "x"), _record("b", 9, None)], [_record("a", 9, "x"), _record("b", 2, "sat")]]
    assert per_question(seeds, "recall@5") == {"a": 0.5, "b": 0.5}
    assert per_question(seeds, "f1") == {"a": 0.0, "b": pytest.approx(2 / 3)}  # b answered in one seed only


def test_paired_difference_counts_wins_and_pairs_only_shared_questions():
    system = {"a": 1.0, "b": 1.0, "c": 0.5, "d": 0.0}
    base = {"a": 0.0, "b": 1.0, "c": 0.0, "e": 1.0}
    diff = paired_difference(system, base, system_label="s", baseline_label="b", metric="recall@5")
    assert diff.n_questions == 3 and diff.mean == pytest.approx(0.5) and (diff.wins, diff.losses) == (2, 0)
    assert diff.low >= 0 and diff.high <= 1
    assert paired_difference({"x": 1.0}, {"y": 1.0}, system_label="s", baseline_label="b", metric="em") is None


def test_report_writes_the_paired_table_and_json(tmp_path):
    from rag_e2e.eval.report import write_report
    from rag_e2e.eval.runs import collect_runs

    rng = np.random.default_rng(3)
    for system, p_hit in (("base", 0.3), ("better", 0.7)):
        for seed in (0, 1, 2):
            run = tmp_path / "runs" / f"{system}-{seed}"
            run.mkdir(parents=True)
            (run / "config.yaml").write_text(f"name: {system}\ntrainer:\n  seed: {seed}\n")
            records = [_record(f"q{i}", 1 if rng.random() < p_hit else None, "the cat sat" if i % 2 else None)
                       for i in range(60)]
            (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            hits = sum(r["gold_rank"] is not None for r in records) / 60
            (run / "metrics.json").write_text(json.dumps({"test/recall@5": hits, "test/em": 0.5, "test/f1": 0.5,
                                                          "test/recall@1": hits, "test/recall@10": hits}))
    runs = collect_runs([tmp_path / "runs"])
    paths = write_report(runs, tmp_path / "out", title="t", baseline="base")
    summary = json.loads(paths["results.json"].read_text())
    r5 = next(d for d in summary["paired"] if d["metric"] == "recall@5")
    assert r5["system"] == "better" and r5["n_questions"] == 60 and r5["excludes_zero"] and r5["low"] > 0
    em = next(d for d in summary["paired"] if d["metric"] == "em")
    assert em["n_questions"] == 30 and em["mean"] == 0 and not em["excludes_zero"]  # same answers, odd qids only
    text = paths["results.md"].read_text()
    assert "#### Paired against base" in text and "| better |" in text
    # A second baseline gets its own table, and its differences are the first table's with the sign flipped.
    both = write_report(runs, tmp_path / "out2", title="t", baseline=["base", "better"])
    text = both["results.md"].read_text()
    assert "#### Paired against base" in text and "#### Paired against better" in text and "| base |" in text
    flipped = {(d["system"], d["metric"]): d for d in json.loads(both["results.json"].read_text())["paired"]}
    for d in summary["paired"]:
        mirror = flipped[("base", d["metric"])]
        assert mirror["mean"] == pytest.approx(-d["mean"], abs=1e-12)
        assert (mirror["wins"], mirror["losses"]) == (d["losses"], d["wins"])
