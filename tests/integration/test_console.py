"""The console of `rag-e2e train`: quiet by default (no Lightning notices, no library deprecation warnings, no
W&B 'anonymous' warning, no v_num in the bar); `-v` shows the libraries' lines again."""

import os
import re
import subprocess
import sys

import pytest
from helpers import REPO


def _train(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RAG_E2E_VERBOSE", None)
    return subprocess.run([sys.executable, "-m", "rag_e2e.cli", "train", *extra, "experiment=tiny",
                           f"run_dir={tmp_path / 'run'}", "trainer.max_steps=4", "trainer.val_check_interval=2"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


NOTICES = ("GPU available", "litlogger", "LeafSpec", "anonymous setting", "v_num")


@pytest.mark.parametrize("verbose", [False, True])
def test_train_is_quiet_unless_verbose(tmp_path, verbose):
    done = _train(tmp_path, *(["-v"] if verbose else []))
    assert done.returncode == 0, done.stderr[-3000:]
    console = done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("metrics: ")
    if verbose:
        assert "GPU available" in console
    else:
        assert [n for n in NOTICES if n in console] == []
    assert not re.search(r"\[\d\d:\d\d<", console), "a tqdm bar beside the Rich one"  # tqdm's [elapsed<left]
