"""Does the reader's likelihood point the retriever at the gold passage? The signal every objective trains from.

    python experiments/analysis/reader_signal.py [split=train] [n=96] [out=reader_signal.json] [config overrides...]
    e.g. python experiments/analysis/reader_signal.py experiment=squad_llm/fixed_retriever trainer.num_threads=1

With the untrained retriever, each of the first `n` questions of `split` retrieves its top k and the reader scores
the reference answer on every retrieved passage: ll_z = log p(y | x, z). Over the questions with a gold passage
among the k (the only ones where "which passage" has a right answer), reported:

  retriever_top1_gold   the retriever's top passage is gold
  reader_top1_gold      argmax_z ll_z is gold (the passage pdist/loop/lsr/the marginal posterior push up most)
  p_R(gold)             mean retriever mass on the gold passages, softmax(s / θ)
  posterior(gold)       the RAG-Sequence posterior's, p_R(z) p(y|x,z) / Σ p_R p(y|x,·): what `sequence` moves p_R to
  pdist target(gold)    softmax(ll / τ)'s: what `pdist` moves p_R to
  fixes / breaks        of questions whose top passage is not gold, how many the reader ranks gold first; of those
                        whose top passage is gold, how many it ranks another passage first

When the reader's target puts less mass on gold than p_R does, training toward it lowers recall: what the SQuAD rows
of the objectives table measured with the frozen Gemma-3-270m reader.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch

from rag_e2e.compose import compose, split_options
from rag_e2e.eval.metrics import gold_rank
from rag_e2e.losses import doc_log_prior
from rag_e2e.train import assemble


@torch.no_grad()
def reader_signal(overrides: list[str], split: str, n: int) -> dict:
    cfg = compose(overrides)
    torch.set_num_threads(cfg.trainer.num_threads or torch.get_num_threads())
    L.seed_everything(cfg.trainer.seed, verbose=False)  # the towers a run with this config starts from
    parts = assemble(cfg, progress=False)
    rag, builder = parts.module.rag.eval(), parts.refresh.builder
    index, _ = builder.build(rag.encoder)
    rag.set_index(index)
    examples = getattr(parts.datamodule, split)[:n]
    theta, tau = cfg.retriever.temperature, cfg.model.lm_temperature
    rows = []
    for i in range(0, len(examples), cfg.data.eval_batch_size):
        batch = parts.datamodule.collator(examples[i : i + cfg.data.eval_batch_size])
        out = rag(batch.q_ids, batch.q_mask, batch.questions, batch.labels)
        ll = out.scores.answer_ll.double()  # (B, k)
        log_prior = doc_log_prior(out.scores.doc_scores.double(), theta)
        for ex, row, ll_q, lp_q in zip(batch.examples, out.retrieved.rows.tolist(), ll, log_prior):
            # Each passage on its own through gold_rank: the relevance rule recall@k uses (gold ids, else the answer
            # in the text, as for NQ-open).
            gold = torch.tensor([gold_rank([rag.corpus[r].pid], list(ex.gold_pids), [rag.corpus[r].text],
                                           list(ex.answers)) == 1 for r in row])
            if not gold.any():
                continue
            rows.append({"qid": ex.qid, "gold": gold.tolist(), "ll": ll_q.tolist(), "log_prior": lp_q.tolist(),
                         "p_R": lp_q.exp()[gold].sum().item(),
                         "posterior": torch.softmax(lp_q + ll_q, 0)[gold].sum().item(),
                         "pdist": torch.softmax(ll_q / tau, 0)[gold].sum().item(),
                         "retriever_top1": bool(gold[0]), "reader_top1": bool(gold[ll_q.argmax()])})
    return summarize(rows, len(examples), cfg.retriever.k) | {"overrides": overrides, "split": split,
                                                              "temperature": theta, "lm_temperature": tau,
                                                              "questions": rows}


def summarize(rows: list[dict], asked: int, k: int) -> dict:
    def mean(key: str) -> float:
        return sum(float(r[key]) for r in rows) / len(rows) if rows else float("nan")

    top_wrong = [r for r in rows if not r["retriever_top1"]]
    top_right = [r for r in rows if r["retriever_top1"]]
    return {"asked": asked, "k": k, "gold_in_top_k": len(rows),
            "retriever_top1_gold": mean("retriever_top1"), "reader_top1_gold": mean("reader_top1"),
            "p_R_gold": mean("p_R"), "posterior_gold": mean("posterior"), "pdist_target_gold": mean("pdist"),
            "fixes": f"{sum(r['reader_top1'] for r in top_wrong)}/{len(top_wrong)}",
            "breaks": f"{sum(not r['reader_top1'] for r in top_right)}/{len(top_right)}"}


def main(argv: list[str]) -> int:
    opts, overrides = split_options(argv, {"split": "train", "n": "96", "out": "reader_signal.json"})
    result = reader_signal(overrides, opts["split"], int(opts["n"]))
    print(f"{opts['split']}: {result['gold_in_top_k']} of {result['asked']} questions have gold in the top "
          f"{result['k']}")
    print(f"{'measure':<28}{'value':>8}")
    for key in ("retriever_top1_gold", "reader_top1_gold", "p_R_gold", "posterior_gold", "pdist_target_gold"):
        print(f"{key:<28}{result[key]:>8.3f}")
    print(f"{'fixes / breaks':<28}{result['fixes']:>8} {result['breaks']}")
    Path(opts["out"]).parent.mkdir(parents=True, exist_ok=True)
    Path(opts["out"]).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {opts['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
