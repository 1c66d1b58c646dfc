"""Shared builders for tests: tiny configs that run in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

from rag_e2e.compose import compose
from rag_e2e.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SQUAD_DEV = SHARED_DATA / "squad-v1.1-dev" / "dev-v1.1.json.zip"

TINY = [
    "data.synthetic.num_entities=40",
    "data.synthetic.num_reader_entities=20",
    "data.batch_size=4",
    "data.eval_batch_size=16",
    "encoder.hidden_size=32",
    "encoder.intermediate_size=64",
    "generator.d_model=32",
    "generator.ffn_dim=64",
    "generator.num_layers=1",
    "retriever.k=3",
    "eval.ks=[1,5]",
    "eval.max_new_tokens=6",
    "logger.wandb=false",
]


DDP_CPU = ["trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu", "trainer.num_threads=1"]


def train_in_subprocess(*overrides: str) -> dict:
    """`rag-e2e train <overrides>` in a fresh process (DDP launches its ranks from it); its metrics.json, after
    asserting it exited 0. One of the overrides must set `run_dir=`."""
    import json
    import os
    import subprocess
    import sys

    run_dir = next(Path(o.split("=", 1)[1]) for o in overrides if o.startswith("run_dir="))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "rag_e2e.cli", "train", *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


def tiny_config(*overrides: str, run_dir: Path | None = None) -> RunConfig:
    """The default experiment shrunk to tiny random models and a 40-passage knowledge base."""
    extra = [f"run_dir={run_dir}"] if run_dir is not None else []
    return compose([*TINY, *extra, *overrides])


def assert_data_error(exc, path: Path, line: int | None, field: str | None, text: str) -> None:
    """A DataFormatError names file, line and field, both as attributes and in its one-line message."""
    err = exc.value
    assert (err.path, err.line, err.field) == (str(path), line, field)
    msg = str(err)
    assert msg.startswith(f"{path}:{line}:" if line is not None else f"{path}:")
    if field is not None:
        assert f"field '{field}'" in msg
    assert text in msg


def assemble_with_index(*overrides: str):
    """`assemble` a tiny config and build its initial index (the callback would, when a Trainer starts)."""
    from rag_e2e.train import assemble

    parts = assemble(tiny_config(*overrides), progress=False)
    index, _ = parts.refresh.builder.build(parts.module.rag.encoder)
    parts.module.swap_index(index)
    return parts


def synthetic_files(folder: Path) -> tuple[Path, Path]:
    """The tiny synthetic KB as user files (a JSONL corpus and a JSONL QA file with gold ids) in a new `folder`."""
    import json

    from rag_e2e.data.synthetic import make_synthetic_kb

    kb = make_synthetic_kb(40, 20, 3, 0)
    folder.mkdir()
    corpus, qa = folder / "corpus.jsonl", folder / "qa.jsonl"
    corpus.write_text("".join(json.dumps({"id": p.pid, "title": p.title, "text": p.text}) + "\n" for p in kb.corpus))
    qa.write_text("".join(json.dumps({"id": ex.qid, "question": ex.question, "answers": list(ex.answers),
                                      "gold_passage_ids": list(ex.gold_pids)}) + "\n"
                          for ex in kb.train + kb.dev + kb.test))
    return corpus, qa
