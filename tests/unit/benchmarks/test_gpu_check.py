"""python -m rag_e2e.benchmarks.gpu_check on CPU at tiny sizes: its arguments, its checks and its JSON (the GPU run
itself happens only on a lent device)."""

import json

import pytest
import torch

TINY = ["--dim", "32", "--check-n", "300", "--check-b", "1", "5", "--check-k", "1", "10", "--n", "500", "--b", "1",
        "4", "--k", "10", "--warmup", "0", "--repeats", "1"]


def test_tiny_run_writes_one_json_with_every_section(tmp_path, monkeypatch):
    from rag_e2e.benchmarks import gpu_check

    monkeypatch.setenv("RAG_E2E_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "check.json"
    assert gpu_check.main([*TINY, "--out", str(out), "--train-steps", "2", "--refresh-every", "1"]) == 0
    result = json.loads(out.read_text())
    rows = result["correctness"]["rows"]  # TRITON_INTERPRET=1 (tests/conftest.py): the kernel runs on CPU
    assert {(r["dtype"], r["B"], r["k"]) for r in rows} == {(d, b, k) for d in ("float32", "bfloat16")
                                                             for b in (1, 5) for k in (1, 10)}
    assert result["correctness"]["ok"] and all(r["max_score_err"] <= r["tol"] for r in rows)
    bench_cells = {(r["N"], r["B"], r["k"]) for r in result["bench"]["rows"]}
    assert bench_cells == {(500, 1, 10), (500, 4, 10)} and result["bench"]["dtypes"] == ["bfloat16"]
    assert result["bandwidth"] == {"goal": 0.85, "worst_frac_copy": None, "met": False}  # no Triton rows on CPU
    training = result["training"]
    assert training["ok"] and training["metrics"]["train/steps"] == 2 and training["metrics"]["refresh/count"] >= 1


def test_correctness_fails_when_the_kernel_returns_a_wrong_row(monkeypatch):
    from rag_e2e.benchmarks import gpu_check

    real = gpu_check.topk_scores

    def off_by_one(queries, docs, k, **kw):  # the right scores, but the last rank's row replaced
        scores, idx = real(queries, docs, k, **kw)
        idx = idx.clone()
        idx[:, -1] = (idx[:, -1] + 1) % docs.shape[0]
        return scores, idx

    monkeypatch.setattr(gpu_check, "topk_scores", off_by_one)
    rows = gpu_check.check_correctness(torch.device("cpu"), ["float32"], 200, 16, [3], [5], seed=1)
    assert not rows[0]["ok"] and rows[0]["rows_match"] < 1.0 and rows[0]["max_score_err"] > rows[0]["tol"]


def test_bandwidth_summary_takes_the_worst_triton_cell_up_to_b256():
    from rag_e2e.benchmarks.gpu_check import bandwidth_summary

    rows = [dict(method="triton", B=1, frac_copy=0.9), dict(method="triton", B=256, frac_copy=0.87),
            dict(method="triton", B=1024, frac_copy=0.5), dict(method="torch_topk", B=16, frac_copy=0.3)]
    assert bandwidth_summary({"rows": rows}) == {"goal": 0.85, "worst_frac_copy": 0.87, "met": True}
    rows[1]["frac_copy"] = 0.8
    assert bandwidth_summary({"rows": rows})["met"] is False


@pytest.mark.parametrize("bad", [["--check-k", "200"], ["--k", "129"], ["--repeats", "0"], ["--n", "0"],
                                 ["--train-steps", "-1"]])
def test_bad_arguments_are_one_usage_error(bad, capsys):
    from rag_e2e.benchmarks import gpu_check

    with pytest.raises(SystemExit) as exc:
        gpu_check.parse_args(bad)
    assert exc.value.code == 2 and "error:" in capsys.readouterr().err
