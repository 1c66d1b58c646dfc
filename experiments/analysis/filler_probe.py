"""Does a passage vector show the fact its passage states, or its filler? A probe for `experiment=synthetic_hard`.

    python experiments/analysis/filler_probe.py <run dir> [<run dir> ...] [out=filler_probe.json]

Each `synthetic_hard` passage is one fact ("Amber Falcon is the town where Tovarin Beskal was born.") and two filler
sentences from a shared pool. For the untrained passage tower and for the tower in each run's last checkpoint, every
passage is encoded twice: as written, and as its fact alone (the same KB generated without filler). Reported:
fact -> own passage, the share of fact-only vectors whose nearest full passage by cosine is their own (cosine, not
the inner product retrieval scores with: a one-sentence input's vector has another norm than a three-sentence one's,
and the question here is direction). 1.0: the filler does not hide which fact a passage states.
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from rag_e2e.compose import load_run_config
from rag_e2e.data.synthetic import make_synthetic_kb
from rag_e2e.data.types import Passage
from rag_e2e.retrieval.encoders import BiEncoder
from rag_e2e.retrieval.refresh import IndexBuilder
from rag_e2e.train import assemble


def fact_to_own_passage(encoder: BiEncoder, builder: IndexBuilder, facts: list[Passage]) -> float:
    """Share of fact-only vectors whose top-1 among the full passages' vectors is their own passage."""
    full_reps = torch.nn.functional.normalize(builder.encode(encoder).double(), dim=1)  # (N, d), as a refresh
    fact_reps = torch.nn.functional.normalize(replace(builder, corpus=facts).encode(encoder).double(), dim=1)
    best = (fact_reps @ full_reps.T).argmax(1)  # (N,) nearest full passage by cosine
    return (best == torch.arange(len(facts))).double().mean().item()


def main(argv: list[str]) -> int:
    out = Path("filler_probe.json")
    run_dirs = []
    for arg in argv:
        if arg.startswith("out="):
            out = Path(arg[4:])
        else:
            run_dirs.append(Path(arg))
    rows = []
    for run_dir in run_dirs:
        cfg = load_run_config(run_dir / "config.yaml", ["logger.wandb=false"])
        syn = cfg.data.synthetic
        facts = make_synthetic_kb(syn.num_entities, syn.num_reader_entities, syn.attributes_per_entity, syn.seed,
                                  twins=syn.twins, filler_sentences=0).corpus
        parts = assemble(cfg, progress=False)
        corpus, untrained = parts.data.corpus, parts.module.rag.encoder
        if not all(p.pid == f.pid and p.text.startswith(f.text) for p, f in zip(corpus, facts)):
            raise SystemExit(f"{run_dir}: not a synthetic KB with filler (passages do not start with their fact)")
        builder = parts.refresh.builder
        state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        trained = copy.deepcopy(untrained)
        trained.load_state_dict({k[len("rag.encoder."):]: v for k, v in state["state_dict"].items()
                                 if k.startswith("rag.encoder.")})
        rows.append({"run": str(run_dir), "train_passage_encoder": cfg.retriever.train_passage_encoder,
                     "untrained": fact_to_own_passage(untrained, builder, facts),
                     "trained": fact_to_own_passage(trained, builder, facts)})
    print(f"{'run':<48}{'passage tower trained':>22}{'fact->own, untrained':>22}{'after training':>16}")
    for row in rows:
        print(f"{Path(row['run']).name:<48}{row['train_passage_encoder']!s:>22}{row['untrained']:>22.3f}"
              f"{row['trained']:>16.3f}")
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
