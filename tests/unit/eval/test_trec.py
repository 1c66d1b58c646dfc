"""TREC run/qrels output and ir_measures parity: Success@k and RR equal our recall@k and MRR on the same
predictions, nDCG@10 equals the float64 definition; ids that TREC files cannot hold are one line naming them."""

import dataclasses
import json
import random

import pytest

from rag_e2e import cli
from rag_e2e.errors import DataFormatError
from rag_e2e.eval import metrics, trec
from rag_e2e.eval.predictions import Prediction, read_predictions

pytest.importorskip("ir_measures")


def _predictions(rng: random.Random, n: int = 60, k: int = 10, corpus: int = 40) -> list[Prediction]:
    out = []
    for i in range(n):
        retrieved = rng.sample([f"p{j}" for j in range(corpus)], k)
        scores = sorted((rng.uniform(-5, 5) for _ in range(k)), reverse=True)  # distinct: no trec_eval re-sort
        gold = tuple(rng.sample([f"p{j}" for j in range(corpus)], rng.randint(1, 3)))
        out.append(Prediction(qid=f"q{i}", question="?", answer="a", gold=("a",), gold_pids=gold,
                              gold_rank=metrics.gold_rank(retrieved, gold), retrieved=tuple(retrieved),
                              scores=tuple(scores)))
    return out


def test_ir_measures_agrees_with_our_metrics_and_the_ndcg_definition():
    rng = random.Random()
    preds = _predictions(rng)
    got = trec.measure(preds, ["Success@1", "Success@5", "Success@10", "RR", "nDCG@10"])
    ranks = [p.gold_rank for p in preds]
    for k in (1, 5, 10):
        assert got[f"Success@{k}"] == pytest.approx(metrics.recall_at_k(ranks, k), abs=1e-9)
    assert got["RR"] == pytest.approx(metrics.mrr(ranks), abs=1e-6)  # ours is float32-free: 1e-6 is trec_eval's
    want = sum(trec.ndcg_at(p.retrieved, set(p.gold_pids), 10) for p in preds) / len(preds)
    assert got["nDCG@10"] == pytest.approx(want, abs=1e-4)  # trec_eval prints 4 decimals; pytrec_eval is float64


def test_rprec_agrees_with_kilt_r_precision():
    preds = _predictions(random.Random(), k=5)
    got = trec.measure(preds, ["Rprec"])["Rprec"]
    want = sum(metrics.r_precision(p.retrieved, p.gold_pids) for p in preds) / len(preds)
    assert got == pytest.approx(want, abs=1e-4)  # trec_eval's 4 decimals


def test_r_precision_by_hand():
    assert metrics.r_precision(["a", "x", "b"], ["a", "b"]) == 0.5  # R=2: top 2 hold one gold
    assert metrics.r_precision(["b", "a", "x"], ["a", "b", "b"]) == 1.0  # distinct gold ids: R=2
    assert metrics.r_precision(["a"], ["a", "b", "c"]) == pytest.approx(1 / 3)  # shorter than R
    with pytest.raises(ValueError, match="gold passage"):
        metrics.r_precision(["a"], [])


def test_ndcg_by_hand():
    assert trec.ndcg_at(["a", "b", "c"], {"a"}, 10) == 1.0
    assert trec.ndcg_at(["x", "a"], {"a"}, 10) == pytest.approx(1 / 1.584962500721156)  # 1/log2(3)
    assert trec.ndcg_at(["x", "a"], {"a", "b"}, 10) == pytest.approx((1 / 1.584962500721156) / (1 + 1 / 1.5849625))
    assert trec.ndcg_at(["x", "y"], {"a"}, 10) == 0.0


def test_the_command_writes_run_qrels_and_metrics_from_a_run_dir(tmp_path, capsys):
    preds = _predictions(random.Random(), n=5, k=3)
    rows = [{"qid": p.qid, "question": p.question, "answer": p.answer, "gold": list(p.gold),
             "gold_pids": list(p.gold_pids), "gold_rank": p.gold_rank, "retrieved": list(p.retrieved),
             "scores": list(p.scores)} for p in preds]
    rows.append({**rows[0], "qid": "nq-like", "gold_pids": [], "gold_rank": None})  # answer-string relevance
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli.main(["trec", str(tmp_path), "tag=mine"]) == 0
    assert "5 of 6 questions judged" in capsys.readouterr().out
    run = (tmp_path / "run.trec").read_text().splitlines()
    assert len(run) == 15 and run[0].split()[:4] == ["q0", "Q0", preds[0].retrieved[0], "1"]
    assert all(line.split()[5] == "mine" for line in run) and "nq-like" not in "".join(run)
    qrels = (tmp_path / "qrels.trec").read_text().splitlines()
    assert sorted(qrels) == sorted(f"{p.qid} 0 {g} 1" for p in preds for g in p.gold_pids)
    summary = json.loads((tmp_path / "trec_metrics.json").read_text())
    assert summary["judged"] == 5 and summary["measures"]["Success@1"] == pytest.approx(
        metrics.recall_at_k([p.gold_rank for p in preds], 1))
    assert read_predictions(tmp_path / "predictions.jsonl")  # the input is untouched


def test_an_id_with_whitespace_is_one_error_naming_the_line(tmp_path):
    p = _predictions(random.Random(), n=2, k=2)
    bad = dataclasses.replace(p[1], retrieved=("p1", "has space"))
    with pytest.raises(DataFormatError, match=r"preds.jsonl:2: field 'retrieved': 'has space' cannot be a TREC id"):
        trec.run_lines([p[0], bad], "t", "preds.jsonl")


def test_an_unknown_measure_is_one_line(tmp_path, capsys):
    preds = _predictions(random.Random(), n=2, k=2)
    rows = [{"qid": p.qid, "question": "?", "answer": "a", "gold": ["a"], "gold_pids": list(p.gold_pids),
             "gold_rank": p.gold_rank, "retrieved": list(p.retrieved), "scores": list(p.scores)} for p in preds]
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli.main(["trec", str(tmp_path), "measures=nDCG@10,Bogus@3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rag-e2e: error: rag-e2e trec: measures:")
    assert not (tmp_path / "run.trec").exists()
