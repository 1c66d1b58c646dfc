"""A PNG of a page rendered by headless Chromium (`python -m rag_e2e.eval.html_report --screenshot`)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from rag_e2e import atomic
from rag_e2e.errors import RagE2EError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str:
    """The first of CHROMIUM_NAMES on PATH.

    Raises:
        RagE2EError: none is installed.
    """
    for name in CHROMIUM_NAMES:
        if found := shutil.which(name):
            return found
    raise RagE2EError(f"no headless browser for screenshots: install one of {', '.join(CHROMIUM_NAMES)}")


def screenshot(page: Path, png: Path, window: tuple[int, int] = (1200, 1400), timeout_s: float = 60) -> Path:
    """Render `page` with headless Chromium to the PNG `png` (the top `window` pixels), atomically.

    Raises:
        RagE2EError: no Chromium, or it failed or timed out.
    """
    with tempfile.TemporaryDirectory(prefix="rag-e2e-shot-") as tmp:
        shot = Path(tmp) / "shot.png"
        command = [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   f"--user-data-dir={tmp}/profile", f"--screenshot={shot}", f"--window-size={window[0]},{window[1]}",
                   Path(page).resolve().as_uri()]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RagE2EError(f"{page}: Chromium did not finish the screenshot in {timeout_s:g} s") from None
        if proc.returncode != 0 or not shot.is_file():
            raise RagE2EError(f"{page}: Chromium screenshot failed (exit {proc.returncode}): {proc.stderr[-500:]}")
        return atomic.write_bytes(png, shot.read_bytes())
