"""rag_e2e.eval.report on fake run directories: aggregation against numpy, table formats, plots, bad input."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from rag_e2e.errors import RagE2EError
from rag_e2e.eval.aggregate import DEFAULT_METRICS, summarize
from rag_e2e.eval.report import write_report
from rag_e2e.eval.runs import collect_runs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEEDS = {"sys_b": [0, 1, 2], "sys_a": [3, 4]}  # sys_b first on disk, so order= visibly changes the table
CSV_HEADER = ["epoch", "step", "train/loss", "val/em", "val/recall@5", "test/em"]


def _make_run(root: Path, name: str, seed: int, rng: random.Random, finished: bool = True) -> Path:
    """A run directory as `rag-e2e train` leaves it: config.yaml, metrics.json, a sparse csv/metrics.csv."""
    run_dir = root / f"{name}-seed{seed}"
    (run_dir / "csv").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"name": name, "trainer": {"seed": seed},
                                                         "retriever": {"k": 5}}))
    # Sparse rows, as Lightning writes them: train and val metrics land on separate rows of the same step.
    rows = [",".join(CSV_HEADER)]
    for step in (9, 19, 29):
        rows.append(f"0,{step},{rng.uniform(1, 5)},,,")
        rows.append(f"0,{step},,{rng.random()},{rng.random()},")
    (run_dir / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    if finished:
        metrics = {f"{prefix}/{m}": rng.random() for prefix in ("init", "test")
                   for m in ("em", "f1", "recall@1", "recall@5", "recall@10", "mrr")}
        metrics |= {"time/total_s": rng.uniform(10, 100), "train/steps": 30}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


@pytest.fixture
def runs_root(tmp_path) -> Path:
    rng = random.Random(0)
    root = tmp_path / "runs"
    for name, seeds in SEEDS.items():
        for seed in seeds:
            _make_run(root, name, seed, rng)
    _make_run(root / "crashed", "sys_a", 9, rng, finished=False)
    return root


def test_collect_runs_skips_unfinished_with_a_warning(runs_root, capsys):
    runs = collect_runs([runs_root])
    assert sorted((r.label, r.seed) for r in runs) == sorted((n, s) for n, seeds in SEEDS.items() for s in seeds)
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and "unfinished" in warning
    assert str(runs_root / "crashed" / "sys_a-seed9") in warning
    # Only non-empty cells become curve points; test/* columns are not curves.
    assert [step for step, _ in runs[0].curves["val/em"]] == [9, 19, 29]
    assert [step for step, _ in runs[0].curves["train/loss"]] == [9, 19, 29]
    assert set(runs[0].curves) == {"train/loss", "val/em", "val/recall@5"}


def test_collect_runs_run_dir_and_parent_give_each_run_once(runs_root):
    run_dir = runs_root / "sys_a-seed3"
    assert len(collect_runs([run_dir, runs_root])) == 5
    assert [r.path for r in collect_runs([run_dir])] == [run_dir]


def test_label_from_several_config_keys(runs_root):
    runs = collect_runs([runs_root / "sys_a-seed3"], label_keys=("name", "retriever.k"))
    assert runs[0].label == "sys_a retriever.k=5"
    with pytest.raises(RagE2EError, match=r"config\.yaml.*'retriever\.nope'"):
        collect_runs([runs_root / "sys_a-seed3"], label_keys=("retriever.nope",))


def test_summary_matches_numpy(runs_root, tmp_path):
    runs = collect_runs([runs_root])
    paths = write_report(runs, tmp_path / "out", title="t", order=["sys_a", "sys_b"])
    rows = json.loads(paths["results.json"].read_text())["systems"]
    assert [row["label"] for row in rows] == ["sys_a", "sys_b"]
    for row in rows:
        group = [r for r in runs if r.label == row["label"]]
        assert row["n_seeds"] == len(SEEDS[row["label"]]) and sorted(row["seeds"]) == sorted(SEEDS[row["label"]])
        for metric in DEFAULT_METRICS:
            values = np.array([r.metrics[metric] for r in group], dtype=np.float64)
            assert abs(row["mean"][metric] - values.mean()) < 1e-9
            assert abs(row["std"][metric] - values.std(ddof=1)) < 1e-9
        assert abs(row["time_s"] - np.mean([r.metrics["time/total_s"] for r in group])) < 1e-9


def test_std_only_with_several_seeds(runs_root):
    rows = summarize(collect_runs([runs_root / "sys_a-seed3"]))
    assert rows[0].n_seeds == 1 and rows[0].std["test/em"] is None and rows[0].mean["test/em"] is not None


def test_order_must_name_existing_labels(runs_root):
    with pytest.raises(RagE2EError, match="sys_c"):
        summarize(collect_runs([runs_root]), order=["sys_c"])


def test_markdown_and_latex_tables(runs_root, tmp_path):
    runs = collect_runs([runs_root])
    paths = write_report(runs, tmp_path / "out", title="My results", order=["sys_a", "sys_b"])
    md = paths["results.md"].read_text()
    table = [line for line in md.splitlines() if line.startswith("| sys_")]
    assert [line.split("|")[1].strip() for line in table] == ["sys_a", "sys_b"]
    assert "| system | seeds | EM | F1 | R@1 | R@5 | R@10 | time |" in md
    em = next(r for r in summarize(runs) if r.label == "sys_a")
    assert f"{100 * em.mean['test/em']:.1f} ± {100 * em.std['test/em']:.1f}" in table[0]
    assert all(re.fullmatch(r"\d+\.\d ± \d+\.\d", cell.strip()) for cell in table[0].split("|")[3:8])
    assert "Seeds: sys_a: 3, 4; sys_b: 0, 1, 2." in md

    tex = paths["results.tex"].read_text()
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    assert tex.index(r"\begin{tabular}") < tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    assert r"sys\_a &" in tex and r"sys\_b &" in tex and "sys_a &" not in tex
    assert r"$\pm$" in tex and "±" not in tex


def test_pngs_are_valid_images(runs_root, tmp_path):
    import matplotlib.image

    paths = write_report(collect_runs([runs_root]), tmp_path / "new" / "out", title="t")
    for name in ("recall_at_k.png", "curves.png"):
        assert paths[name].read_bytes()[:8] == PNG_MAGIC
        image = matplotlib.image.imread(paths[name])
        assert image.shape[0] >= 300 and image.shape[1] >= 400
        assert np.ptp(image[..., :3]) > 0.5  # something was drawn, not a blank canvas
    assert sorted(p.name for p in (tmp_path / "new" / "out").iterdir()) == sorted(paths)  # no temp files left


def test_malformed_metrics_json_names_the_file(runs_root):
    bad = runs_root / "sys_a-seed3" / "metrics.json"
    bad.write_text('{"test/em": 0.5,')
    with pytest.raises(RagE2EError, match=re.escape(str(bad))):
        collect_runs([runs_root])
    bad.write_text('{"test/em": "high"}')
    with pytest.raises(RagE2EError, match=re.escape(str(bad)) + ".*'test/em'"):
        collect_runs([runs_root])


def test_malformed_config_names_the_file(runs_root):
    bad = runs_root / "sys_a-seed3" / "config.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RagE2EError, match=re.escape(str(bad))):
        collect_runs([runs_root])
    bad.write_text("name: sys_a\n")
    with pytest.raises(RagE2EError, match=re.escape(str(bad)) + ".*'trainer.seed'"):
        collect_runs([runs_root])


def test_no_finished_run_is_an_error(tmp_path, capsys):
    _make_run(tmp_path / "runs", "sys_a", 0, random.Random(0), finished=False)
    with pytest.raises(RagE2EError, match="no finished run"):
        collect_runs([tmp_path / "runs"])
    assert "unfinished" in capsys.readouterr().err
    with pytest.raises(RagE2EError, match="not a directory"):
        collect_runs([tmp_path / "missing"])


def test_failed_render_leaves_previous_report(runs_root, tmp_path, monkeypatch):
    runs = collect_runs([runs_root])
    out = tmp_path / "out"
    write_report(runs, out, title="first")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*args, **kwargs):
        raise RuntimeError("plot failed")

    monkeypatch.setattr("rag_e2e.eval.report.plot_curves", boom)
    with pytest.raises(RuntimeError):
        write_report(runs, out, title="second")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_update_readme_replaces_only_the_results_block(tmp_path):
    from rag_e2e.eval.readme import README_END, README_START, update_readme

    readme, out = tmp_path / "README.md", tmp_path / "experiments" / "results"
    out.mkdir(parents=True)
    (out / "results.md").write_text("| system | EM |\n|---|---|\n| a | 1.0 |\n")
    readme.write_text(f"# Title\n\nbefore\n{README_START}\nold table\n{README_END}\nafter\n")
    update_readme(readme, out / "results.md", out)
    text = readme.read_text()
    assert "old table" not in text and "| a | 1.0 |" in text and text.startswith("# Title\n\nbefore\n")
    assert text.endswith(f"{README_END}\nafter\n") and "(experiments/results/curves.png)" in text
    update_readme(readme, out / "results.md", out)  # idempotent
    assert readme.read_text() == text
    readme.write_text("no markers\n")
    with pytest.raises(RagE2EError, match="results:start"):
        update_readme(readme, out / "results.md", out)
    # A named block is a second table; the default block is left alone.
    readme.write_text(f"{README_START}\nfirst\n{README_END}\n<!-- results:covidqa:start -->\nold\n"
                      "<!-- results:covidqa:end -->\n")
    update_readme(readme, out / "results.md", out, block="covidqa")
    text = readme.read_text()
    assert "first" in text and "old" not in text and text.count("| a | 1.0 |") == 1


def test_report_command_picks_the_columns(runs_root, tmp_path):
    from rag_e2e.cli import main

    out = tmp_path / "cols"
    assert main(["report", str(runs_root), f"out={out}", "metrics=init/recall@5,test/recall@5,test/em"]) == 0
    md = (out / "results.md").read_text()
    assert "| system | seeds | init R@5 | R@5 | EM | time |" in md
    init = next(r for r in summarize(collect_runs([runs_root]), ["init/recall@5"]) if r.label == "sys_b")
    assert f"{100 * init.mean['init/recall@5']:.1f} ± {100 * init.std['init/recall@5']:.1f}" in md
