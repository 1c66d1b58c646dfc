"""One training process per run_dir: a second is refused with one line; a killed holder leaves nothing stuck."""

import os
import signal
import subprocess
import sys
import time

import pytest

from rag_e2e.errors import ConfigError
from rag_e2e.run_lock import LOCK_NAME, exclusive_run_dir

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock: POSIX only")


def test_a_second_holder_is_refused_naming_the_directory_and_the_pid(tmp_path):
    with exclusive_run_dir(tmp_path):
        with pytest.raises(ConfigError) as err, exclusive_run_dir(tmp_path):
            pass
        assert str(err.value).startswith(f"{tmp_path}: another run (pid {os.getpid()})")
        assert "\n" not in str(err.value)
    with exclusive_run_dir(tmp_path):  # released when the first block ended
        pass


def test_a_holder_killed_with_sigkill_leaves_the_directory_free(tmp_path):
    code = ("import sys, time; from rag_e2e.run_lock import exclusive_run_dir\n"
            "with exclusive_run_dir(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"pid {proc.pid}"), exclusive_run_dir(tmp_path):
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while True:  # the kernel drops the lock with the process
        try:
            with exclusive_run_dir(tmp_path):
                break
        except ConfigError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_train_on_a_run_dir_in_use_is_refused_before_any_work(tmp_path, monkeypatch):
    from helpers import tiny_config

    from rag_e2e import train as train_mod

    monkeypatch.setattr(train_mod, "assemble", lambda *a, **k: pytest.fail("assembled while another run held it"))
    cfg = tiny_config(run_dir=tmp_path)
    with exclusive_run_dir(tmp_path), pytest.raises(ConfigError, match="another run"):
        train_mod.train(cfg, progress=False)
