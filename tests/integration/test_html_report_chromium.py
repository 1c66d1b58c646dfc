"""The run page in headless Chromium: it renders (a non-blank screenshot) and its filter script runs offline."""

from __future__ import annotations

import html
import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from rag_e2e.eval.html_report import main
from rag_e2e.eval.screenshot import CHROMIUM_NAMES

QUESTIONS = [  # (question, answer, gold, gold rank): two right, one wrong with the gold read, one retrieval miss
    ("where was Kalo Vemir born?", "Dun Arrow", "Dun Arrow", 1),
    ("which company does Sira Pontek work for?", "the blue heron", "Blue Heron", 2),
    ("what is the name of the pet of Tova Lumb?", "Grey Owl", "Quiet Fern", 1),
    ("where was Bex <b>Halden</b> born?", "Red Hill", "Low Marsh", None),
]


def _chromium() -> str:
    found = next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)
    if found is None:
        pytest.skip(f"no headless browser on PATH ({', '.join(CHROMIUM_NAMES)})")
    return found


def _fake_run(root: Path, rng: random.Random) -> Path:
    """A finished run: config.yaml naming a JSON-lines corpus, metrics.json and predictions.jsonl."""
    run_dir = root / "run"
    run_dir.mkdir(parents=True)
    passages, records = [], []
    for i, (question, answer, gold, rank) in enumerate(QUESTIONS):
        ids = [f"q{i}-p{j}" for j in range(3)]
        for j, pid in enumerate(ids):
            value = gold if j + 1 == rank else f"Place {rng.randint(100, 999)}"
            passages.append({"id": pid, "title": f"Title {i}.{j}", "text": f"{value} appears in passage {pid}."})
        records.append({"qid": f"q{i}", "question": question, "answer": answer, "gold": [gold],
                        "gold_pids": [ids[rank - 1]] if rank else [f"q{i}-elsewhere"], "gold_rank": rank,
                        "retrieved": ids, "scores": sorted((round(rng.uniform(5, 9), 4) for _ in ids), reverse=True)})
    (root / "corpus.jsonl").write_text("".join(json.dumps(p) + "\n" for p in passages))
    (run_dir / "config.yaml").write_text(yaml.safe_dump({
        "name": "chromium_check", "trainer": {"seed": 0},
        "data": {"source": "files", "corpus_path": str(root / "corpus.jsonl"), "qa_path": str(root / "qa.jsonl")}}))
    (run_dir / "metrics.json").write_text(json.dumps({"test/em": 0.5, "test/f1": 0.5, "test/recall@5": 0.75}))
    (run_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def _dump_dom(chromium: str, url: str, profile: Path) -> str:
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                           "--dump-dom", url], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_page_renders_and_filters_in_headless_chromium(tmp_path):
    chromium = _chromium()
    pil_image = pytest.importorskip("PIL.Image")
    run_dir = _fake_run(tmp_path, random.Random(11))
    png = tmp_path / "shot.png"
    assert main([str(run_dir), "--screenshot", str(png), "--window-size", "1200,1600"]) == 0
    with pil_image.open(png) as image:
        assert image.size == (1200, 1600)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, badges and plots, not a blank page

    page = (run_dir / "report.html").resolve()
    dom = _dump_dom(chromium, page.as_uri(), tmp_path / "profile")
    assert html.escape(QUESTIONS[3][0], quote=False) in dom and "Title 1.1" in dom
    assert ">correct<" in dom and ">wrong<" in dom and ">hit<" in dom and ">miss<" in dom
    assert "showing 4 of 4 questions" in dom  # written by the page's script, so it ran
    blocks = re.findall(r'<section class="(q [^"]*)"', dom)
    assert len(blocks) == 4 and not any("filtered" in b for b in blocks)

    # The address ticks the filters on load: only the two wrong answers, then only the one retrieval miss.
    assert "showing 2 of 4 questions" in _dump_dom(chromium, page.as_uri() + "#only-wrong", tmp_path / "profile")
    dom = _dump_dom(chromium, page.as_uri() + "#only-wrong,only-miss", tmp_path / "profile")
    assert "showing 1 of 4 questions" in dom
    assert re.findall(r'<section class="(q [^"]*)"', dom) == [
        "q correct hit filtered", "q correct hit filtered", "q wrong hit filtered", "q wrong miss"]
