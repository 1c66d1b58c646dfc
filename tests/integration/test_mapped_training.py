"""data.mmap_corpus=true trains, refreshes, evaluates and exports exactly as the list corpus does."""

import json

import pytest
from helpers import DDP_CPU, TINY, synthetic_files, tiny_config, train_in_subprocess

from rag_e2e import cli
from rag_e2e.train import train

FAST = ["trainer.max_steps=6", "trainer.val_check_interval=100", "model.reader_warmup_steps=0",
        "eval.before_training=false", "retriever=end2end", "refresh=sync", "refresh.schedule=3"]


def _files(folder):
    corpus, qa = synthetic_files(folder)
    return ["data=files", f"data.corpus_path={corpus}", f"data.qa_path={qa}"]


def _run(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    timings = ("wall_s", "per_s", "time", "seconds")  # measured durations differ run to run
    kept = {k: v for k, v in metrics.items() if not any(t in k for t in timings)}
    return kept, (run_dir / "predictions.jsonl").read_text()


def test_mapped_and_list_corpora_train_alike_and_export(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_E2E_CACHE", str(tmp_path / "cache"))
    data = _files(tmp_path / "data")
    for name, mmap in (("list", "false"), ("mapped", "true")):
        train(tiny_config(*FAST, *data, f"data.mmap_corpus={mmap}", run_dir=tmp_path / name), progress=False)
    assert _run(tmp_path / "mapped") == _run(tmp_path / "list")
    assert list((tmp_path / "cache" / "corpora").iterdir())  # it did read the mapped copy
    assert cli.main(["export", str(tmp_path / "mapped"), str(tmp_path / "export")]) == 0


@pytest.mark.distributed
def test_two_gloo_ranks_share_one_mapped_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_E2E_CACHE", str(tmp_path / "cache"))
    data = _files(tmp_path / "data")
    metrics = train_in_subprocess(*TINY, *FAST, *DDP_CPU, *data, "data.mmap_corpus=true", f"run_dir={tmp_path / 'r'}")
    assert metrics["train/steps"] == 6
    assert len(list((tmp_path / "cache" / "corpora").iterdir())) == 1  # both ranks read the same conversion
