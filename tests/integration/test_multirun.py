"""Hydra multirun end to end: a 4-point grid and a 4-trial Optuna search of tiny runs, checked before they start
and resumed when rerun; DDP ranks share one run directory; the SLURM launcher's submission, without a cluster."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import DDP_CPU, REPO, TINY

from rag_e2e.cli import main

# TINY without retriever.k (the grid sweeps it), two steps, no evaluation before training
FAST = [o for o in TINY if not o.startswith("retriever.k=")] + [
    "trainer.max_steps=2", "trainer.val_check_interval=1000", "eval.before_training=false", "data.batch_size=2",
    "model.reader_warmup_steps=0", "model.reader_ready_nll=null"]


def _jobs(sweep_dir: Path) -> dict[str, tuple[dict, dict]]:
    """job folder -> (its saved config, its metrics.json)."""
    return {d.name: (yaml.safe_load((d / "config.yaml").read_text()), json.loads((d / "metrics.json").read_text()))
            for d in sorted(sweep_dir.iterdir()) if d.is_dir() and not d.name.startswith(".")}


def test_grid_multirun_runs_every_point_and_a_rerun_skips_them(tmp_path, capsys):
    sweep_dir = tmp_path / "grid"
    args = ["train", "-m", "model.loss=sequence,token", "retriever.k=1,2", *FAST, f"hydra.sweep.dir={sweep_dir}"]
    assert main(args) == 0
    jobs = _jobs(sweep_dir)
    # Jobs are named by what they sweep, not by the constant overrides.
    assert set(jobs) == {f"model.loss={loss},retriever.k={k}" for loss in ("sequence", "token") for k in (1, 2)}
    for name, (config, metrics) in jobs.items():
        assert name == f"model.loss={config['model']['loss']},retriever.k={config['retriever']['k']}"
        assert config["run_dir"] == str(sweep_dir / name) and config["trainer"]["max_steps"] == 2
        assert metrics["train/steps"] == 2 and 0.0 <= metrics["test/recall@1"] <= metrics["test/recall@5"] <= 1.0
        predictions = (sweep_dir / name / "predictions.jsonl").read_text().splitlines()
        assert all(len(json.loads(line)["retrieved"]) == config["retriever"]["k"] for line in predictions)
    capsys.readouterr()

    assert main(args) == 0  # the same command again: nothing retrains
    assert capsys.readouterr().out.count("not run again") == 4
    assert _jobs(sweep_dir) == jobs


def test_optuna_search_returns_each_trials_metric(tmp_path):
    sweep_dir = tmp_path / "optuna"
    assert main(["train", "-m", "sweep=optuna_synthetic", "hydra.sweeper.n_trials=4", *FAST,
                 "optimized_metric=test/mrr", f"hydra.sweep.dir={sweep_dir}"]) == 0
    jobs = _jobs(sweep_dir)
    assert len(jobs) == 4
    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    best_metric = max(metrics["test/mrr"] for _, metrics in jobs.values())
    assert result["best_value"] == pytest.approx(best_metric, abs=1e-12)  # what the trials returned
    best_lrs = [config["model"]["lr"] for config, metrics in jobs.values() if metrics["test/mrr"] == best_metric]
    assert any(result["best_params"]["model.lr"] == pytest.approx(lr) for lr in best_lrs)  # ties: any best trial
    lrs = sorted(config["model"]["lr"] for config, _ in jobs.values())
    assert len(set(lrs)) == 4 and 3.0e-4 <= lrs[0] and lrs[-1] <= 3.0e-3  # sampled in the configured interval


@pytest.mark.parametrize(("args", "needle"), [
    (["-m", "sweep=optuna_synthetic", "optimized_metric=test/recal@1"], "`optimized_metric`=test/recal@1 is not"),
    (["-m", "sweep=optuna_synthetic", "optimized_metric=null"], "set it (e.g. optimized_metric=test/em)"),
    (["-m", "sweep=optuna_synthetic", "eval.ks=[1,5]", "optimized_metric=test/recall@10"], "test/recall@10"),
    (["-m", "retriever.k=1,200"], "set `retriever.k` in [1, 128]"),  # the second point, before the first runs
    (["retriever.k=1,2"], "add -m"),
    (["-m", "retriever.k=1,2", "run_dir=x"], "`run_dir` names one run"),
])
def test_bad_sweep_is_one_error_before_anything_runs(args, needle, tmp_path, capsys):
    assert main(["train", *args, f"output_dir={tmp_path}", f"hydra.sweep.dir={tmp_path / 's'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rag-e2e: error:") and needle in err and "\n" not in err
    assert not any(tmp_path.iterdir())


def test_every_shipped_sweep_is_checked_point_by_point():
    from rag_e2e.launch import check_command_line

    points = {name: check_command_line([f"sweep={name}"], multirun=True)
              for name in ("example_grid", "optuna_synthetic", "ablation_k", "ablation_loss", "ablation_refresh",
                           "pinned", "pinned_long", "squad_systems", "squad_llm_systems", "synthetic_hard")}
    assert points == {"example_grid": 4, "optuna_synthetic": 1, "ablation_k": 3, "ablation_loss": 2,
                      "ablation_refresh": 6, "pinned": 4, "pinned_long": 4, "squad_systems": 4,
                      "squad_llm_systems": 5, "synthetic_hard": 6}


@pytest.mark.distributed
def test_ddp_ranks_land_in_the_run_directory_hydra_made(tmp_path):
    """No run_dir given: Hydra names the directory (with a timestamp) and Lightning starts rank 1 in it."""
    proc = subprocess.run([sys.executable, "-m", "rag_e2e.cli", "train", *TINY, *DDP_CPU, "trainer.max_steps=2",
                           "trainer.val_check_interval=1000", "eval.before_training=false", "name=ddp",
                           f"output_dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()  # one directory for both ranks
    assert run_dir.name.startswith("ddp-") and (run_dir / "metrics.json").is_file()
    assert (run_dir / "train.log").is_file() and (run_dir / "train_ddp_process_1.log").is_file()  # rank 1's log
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["devices"] == 2


def test_slurm_launcher_submits_a_multi_node_ddp_job(tmp_path, monkeypatch):
    """hydra/launcher=slurm composed and launched; a stand-in `sbatch` keeps the script it would submit."""
    import submitit
    from hydra.core.utils import JobReturn, JobStatus

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit checks that it exists; nothing runs it here
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    done = JobReturn(status=JobStatus.COMPLETED, _return_value=None)
    monkeypatch.setattr(submitit.core.core.Job, "results", lambda self: [done])

    assert main(["train", "-m", "hydra/launcher=slurm", "experiment=llm/nq_qwen2_5_1_5b_lora", "trainer.num_nodes=2",
                 "trainer.devices=4", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path / 'sweep'}"]) == 0
    script = (tmp_path / "submitted.sh").read_text()
    for flag in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--time=1440"):
        assert f"#SBATCH {flag}\n" in script, flag
    assert "srun " in script and "submitit.core._submit" in script  # each task runs the pickled Hydra job
    pickled = list((tmp_path / "sweep" / ".submitit").rglob("*_submitted.pkl"))
    assert pickled  # the job function and its overrides, which each rank unpickles


@pytest.mark.distributed
def test_ddp_inside_a_multirun_job_runs_in_that_jobs_directory(tmp_path):
    """Lightning starts rank 1 by re-running the command: that command must be this job alone, in its directory."""
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "rag_e2e.cli", "train", "-m", "retriever.k=choice(2)", *FAST, *DDP_CPU,
                           f"hydra.sweep.dir={sweep_dir}"], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (job,) = [d for d in sweep_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]
    assert job.name == "retriever.k=2" and (job / "metrics.json").is_file()
    assert (job / "train_ddp_process_1.log").is_file()
