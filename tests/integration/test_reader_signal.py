"""experiments/analysis/reader_signal.py: its counts agree with the index's own recall, and each question's masses are
the softmaxes of the log-likelihoods and priors it stored (float64, 1e-12)."""

import json
import math
import runpy

import lightning as L
import torch
from helpers import REPO, TINY

from rag_e2e.compose import compose
from rag_e2e.eval.metrics import gold_rank
from rag_e2e.train import assemble

SIGNAL = runpy.run_path(str(REPO / "experiments" / "analysis" / "reader_signal.py"))


def test_summary_of_a_written_out_case():
    rows = [  # q1: retriever right, reader wrong (a break); q2: retriever wrong, reader right (a fix); q3: both right
        {"retriever_top1": True, "reader_top1": False, "p_R": 0.5, "posterior": 0.25, "pdist": 0.2},
        {"retriever_top1": False, "reader_top1": True, "p_R": 0.1, "posterior": 0.6, "pdist": 0.7},
        {"retriever_top1": True, "reader_top1": True, "p_R": 0.9, "posterior": 0.95, "pdist": 0.6},
    ]
    got = SIGNAL["summarize"](rows, asked=5, k=3)
    assert (got["asked"], got["gold_in_top_k"], got["fixes"], got["breaks"]) == (5, 3, "1/1", "1/2")
    assert math.isclose(got["retriever_top1_gold"], 2 / 3) and math.isclose(got["reader_top1_gold"], 2 / 3)
    assert math.isclose(got["p_R_gold"], 0.5) and math.isclose(got["posterior_gold"], 0.6)
    assert math.isclose(got["pdist_target_gold"], 0.5)


def test_reader_signal_agrees_with_the_index_and_its_own_scores(tmp_path, capsys):
    out = tmp_path / "signal.json"
    overrides = [*TINY, "trainer.num_threads=1", "logger.wandb=false"]
    assert SIGNAL["main"]([*overrides, "split=train", "n=24", f"out={out}"]) == 0
    result = json.loads(out.read_text())
    assert result["asked"] == 24 and "fixes / breaks" in capsys.readouterr().out

    cfg = compose(overrides)  # the same untrained towers (seeded), searched directly
    L.seed_everything(cfg.trainer.seed, verbose=False)
    parts = assemble(cfg, progress=False)
    parts.module.eval()  # no dropout in the query tower, as the script runs it
    index, _ = parts.refresh.builder.build(parts.module.rag.encoder)
    examples = parts.datamodule.train[:24]
    batch = parts.datamodule.collator(examples)
    with torch.no_grad():
        _, rows = index.search(parts.module.rag.encoder.encode_query(batch.q_ids, batch.q_mask), cfg.retriever.k)
    corpus = parts.data.corpus
    ranks = [gold_rank([corpus[r].pid for r in row], list(ex.gold_pids)) for ex, row in zip(examples, rows.tolist())]
    assert result["gold_in_top_k"] == sum(r is not None for r in ranks) == len(result["questions"])
    assert result["retriever_top1_gold"] == sum(r == 1 for r in ranks) / len(result["questions"])

    for q in result["questions"]:
        gold = torch.tensor(q["gold"])
        ll, log_prior = torch.tensor(q["ll"], dtype=torch.float64), torch.tensor(q["log_prior"], dtype=torch.float64)
        joint = log_prior + ll
        assert math.isclose(q["posterior"], (joint[gold].exp().sum() / joint.exp().sum()).item(), rel_tol=1e-12)
        assert math.isclose(q["p_R"], log_prior[gold].exp().sum().item(), rel_tol=1e-12)
        assert q["reader_top1"] == bool(gold[ll.argmax()])
