"""A real (tiny) run through the CLI: 20 training steps, then eval of the saved checkpoint."""

import json

import pytest
from helpers import TINY

from rag_e2e.cli import main
from rag_e2e.compose import load_run_config
from rag_e2e.launch import written_metrics

EXPECTED_KEYS = {"init/recall@1", "init/recall@5", "init/em", "test/em", "test/f1", "test/recall@1",
                 "test/recall@5", "test/mrr"}


def _run_dir(out: str):
    last = out.strip().splitlines()[-1]
    assert last.startswith("metrics: ")
    from pathlib import Path

    return Path(last.removeprefix("metrics: ")).parent


def test_train_20_steps_then_eval_checkpoint(tmp_path, capsys):
    args = [*TINY, f"output_dir={tmp_path}", "name=tiny", "trainer.max_steps=20", "trainer.val_check_interval=10",
            "model.reader_loss_weight=1.0", "model.reader_warmup_steps=5", "logger.wandb=true"]
    assert main(["train", *args]) == 0
    run_dir = _run_dir(capsys.readouterr().out)

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert EXPECTED_KEYS <= metrics.keys()
    assert metrics["train/steps"] == 20
    assert all(0.0 <= metrics[k] <= 1.0 for k in EXPECTED_KEYS)
    assert (run_dir / "config.yaml").read_text().count("max_steps: 20") == 1
    preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 40 - 40 // 3  # one held-out question per entity: a third dev, the rest test
    assert {"question", "retrieved", "scores", "answer", "gold"} <= preds[0].keys()
    assert len(preds[0]["retrieved"]) == 3 and preds[0]["scores"] == sorted(preds[0]["scores"], reverse=True)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert any((run_dir / "wandb").iterdir())  # offline W&B run written
    assert list((run_dir / "wandb").rglob("*predictions*.table.json"))  # sample-predictions table
    assert (run_dir / "csv" / "metrics.csv").read_text().count("train/loss") == 1
    # What a sweep may optimise (`optimized_metric`, checked before a sweep starts) is what a run really writes.
    written = written_metrics(load_run_config(run_dir / "config.yaml"))
    assert written <= metrics.keys() and {k for k in metrics if k.startswith(("test/", "init/"))} <= written

    assert main(["eval", str(run_dir / "checkpoints" / "last.ckpt"), "eval.num_beams=2"]) == 0
    eval_metrics = json.loads((run_dir / "eval_metrics.json").read_text())
    assert {"test/em", "test/recall@5"} <= eval_metrics.keys()
    # same weights, same index, same questions: retrieval metrics are reproduced exactly
    assert eval_metrics["test/recall@5"] == metrics["test/recall@5"]


def test_bad_override_is_one_line_error(capsys):
    assert main(["train", "trainer.max_step=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rag-e2e: error:") and "trainer.max_step" in err and "\n" not in err


def test_generation_questions_answer_a_fixed_sample_and_retrieval_covers_all(tmp_path, capsys):
    from rag_e2e.eval.metrics import answer_metrics, retrieval_metrics

    args = [*TINY, f"output_dir={tmp_path}", "name=sampled", "trainer.max_steps=4", "trainer.val_check_interval=2",
            "eval.generation_questions=7", "eval.val_generation_questions=0", "logger.csv=true"]
    assert main(["train", *args]) == 0
    run_dir = _run_dir(capsys.readouterr().out)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    said = [p for p in preds if p["answer"] is not None]
    assert len(preds) == 40 - 40 // 3 and len(said) == 7 and metrics["test/answered"] == 7
    # logged metrics pass through float32: equal to the per-question recomputation within 1e-6
    em = answer_metrics([p["answer"] for p in said], [p["gold"] for p in said])["em"]
    recall = retrieval_metrics([p["gold_rank"] for p in preds], (5,))["recall@5"]
    assert metrics["test/em"] == pytest.approx(em, abs=1e-6)
    assert metrics["test/recall@5"] == pytest.approx(recall, abs=1e-6)
    init = [json.loads(line) for line in (run_dir / "predictions_init.jsonl").read_text().splitlines()]
    assert {p["qid"] for p in init if p["answer"] is not None} == {p["qid"] for p in said}  # the same sample
    assert written_metrics(load_run_config(run_dir / "config.yaml", [])) <= metrics.keys()
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val/recall@5" in header and "val/em" not in header  # validation scored retrieval only


def test_logger_tensorboard_writes_event_files_with_the_logged_scalars(tmp_path, capsys):
    pytest.importorskip("tensorboardX")
    args = [*TINY, f"output_dir={tmp_path}", "name=tb", "trainer.max_steps=4", "trainer.val_check_interval=2",
            "trainer.log_every_n_steps=1", "logger=tensorboard"]
    assert main(["train", *args]) == 0
    run_dir = _run_dir(capsys.readouterr().out)
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and not (run_dir / "wandb").exists() and (run_dir / "csv" / "metrics.csv").is_file()
    data = b"".join(e.read_bytes() for e in events)  # tags are stored verbatim in the event records
    for tag in (b"init/mrr", b"train/loss", b"val/recall_5", b"test/recall_5"):  # TensorBoard writes @ as _
        assert tag in data, tag
