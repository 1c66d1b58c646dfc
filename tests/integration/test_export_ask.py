"""train (tiny) -> export -> ask / serve: the exported system answers as the run evaluated, with no data present."""

import json
import shutil

import pytest
from fastapi.testclient import TestClient
from helpers import DDP_CPU, TINY, synthetic_files, tiny_config, train_in_subprocess

from rag_e2e import cli
from rag_e2e.inference.export import export_run
from rag_e2e.inference.pipeline import RagPipeline
from rag_e2e.inference.serve import create_app
from rag_e2e.train import train

FAST = ["trainer.max_steps=6", "trainer.val_check_interval=100", "model.reader_warmup_steps=0",
        "eval.before_training=false"]


def _predictions(run_dir):
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def _asked(pipeline: RagPipeline, records: list[dict], k: int) -> list[tuple[str, list[str]]]:
    answers = pipeline.ask([r["question"] for r in records], k=k)
    return [(a.answer, [c.pid for c in a.passages]) for a in answers]


def test_export_answers_as_the_run_evaluated_with_no_data_or_run_left(tmp_path, capsys):
    corpus, qa = synthetic_files(tmp_path / "data")
    run_dir = tmp_path / "run"
    train(tiny_config(*FAST, "data=files", f"data.corpus_path={corpus}", f"data.qa_path={qa}", run_dir=run_dir),
          progress=False)
    records = _predictions(run_dir)
    assert cli.main(["export", str(run_dir), str(tmp_path / "export")]) == 0
    # "Another machine": the export moves, and the run directory and every data file are gone.
    shutil.move(tmp_path / "export", tmp_path / "elsewhere")
    shutil.rmtree(run_dir)
    shutil.rmtree(tmp_path / "data")
    pipeline = RagPipeline.from_pretrained(tmp_path / "elsewhere")
    assert _asked(pipeline, records, 3) == [(r["answer"], r["retrieved"]) for r in records]
    assert json.loads((tmp_path / "elsewhere" / "metrics.json").read_text())["train/steps"] == 6

    question = records[0]["question"]
    capsys.readouterr()
    assert cli.main(["ask", str(tmp_path / "elsewhere"), question, "--json"]) == 0
    (asked,) = json.loads(capsys.readouterr().out)
    with TestClient(create_app(pipeline)) as client:
        served = client.post("/ask", json={"question": question}).json()
    assert asked == served and asked["answer"] == records[0]["answer"]
    assert [c["pid"] for c in asked["passages"]] == records[0]["retrieved"]
    assert cli.main(["ask", str(tmp_path / "elsewhere"), question]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"Q: {question}\nA: {records[0]['answer']}\n  [1] {records[0]['retrieved'][0]}")


def test_export_refuses_a_run_without_a_checkpoint(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("run_dir: x\n")
    assert cli.main(["export", str(tmp_path / "run"), str(tmp_path / "out")]) == 2
    assert "last.ckpt: checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.distributed
def test_a_two_process_ddp_run_is_served_by_one(tmp_path, capsys):
    run_dir = tmp_path / "ddp"
    train_in_subprocess(*TINY, *FAST, *DDP_CPU, "eval.ks=[1,3]", f"run_dir={run_dir}")
    shards = sorted(p.name.split("-", 1)[1] for p in (run_dir / "index").iterdir())
    assert shards == ["rank0-of-2", "rank1-of-2"]  # the live index was two per-rank shards
    export_run(run_dir, tmp_path / "export")
    # the passage tower is frozen here: its two saved shards are joined, not encoded again
    assert "saved vectors (index/v0, 2 shard(s))" in capsys.readouterr().out
    pipeline = RagPipeline.from_pretrained(tmp_path / "export")
    assert pipeline.index.size == len(pipeline.corpus)  # one index over the whole corpus
    records = _predictions(run_dir)
    assert _asked(pipeline, records, 3) == [(r["answer"], r["retrieved"]) for r in records]
