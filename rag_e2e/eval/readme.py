"""The results table and plots put into a README, between its start and end markers (`report readme=FILE`)."""

from __future__ import annotations

import os
from pathlib import Path

from rag_e2e import atomic
from rag_e2e.errors import RagE2EError

README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(readme: Path, results_md: Path, out_dir: Path, block: str = "") -> None:
    """Replace the block between README_START and README_END in `readme` with the results table and plots
    (`block`: a named block, `<!-- results:NAME:start -->` ... `<!-- results:NAME:end -->`, for a second table)."""
    start_mark, end_mark = (README_START, README_END) if not block else \
        (f"<!-- results:{block}:start -->", f"<!-- results:{block}:end -->")
    text = readme.read_text()
    start, end = text.find(start_mark), text.find(end_mark)
    if start < 0 or end < start:
        raise RagE2EError(f"{readme}: no `{start_mark}` ... `{end_mark}` block to put the results in")
    rel = os.path.relpath(out_dir, readme.parent)
    block_text = (f"{start_mark}\n{results_md.read_text().strip()}\n\n"
                  f"![recall@k vs k]({rel}/recall_at_k.png) ![EM and recall@5 vs step]({rel}/curves.png)\n{end_mark}")
    atomic.write_text(readme, text[:start] + block_text + text[end + len(end_mark):])
