"""Partial vs full refresh: the table of `sweep=refresh_scope` (recall gain kept vs refresh cost).

    python experiments/analysis/refresh_scope.py runs/sweeps/refresh_scope [more sweep dirs]
        [out=experiments/results/refresh_scope]

Per arm (refresh=sync full, partial 10%, partial 25%, stale), mean ± sample std over seeds of test R@5 and EM,
total refresh seconds and passages encoded per run, and staleness: mean overlap@5 between the live index just
before a refresh and a full re-encode (for full refresh that is `refresh/overlap`; for partial refresh the audit's
`stale_overlap_vs_full`), and for partial arms the same right after the patch. "Gain kept" is
(R@5(arm) - R@5(stale)) / (R@5(full) - R@5(stale)) of the seed means; "cost" is total refresh seconds over full
refresh's. Writes results.json and results.md.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import yaml

ARMS = {("sync", "full"): "full every 25 steps", ("stale", "full"): "no refresh (stale)"}


def _arm(cfg: dict) -> str:
    refresh = cfg["refresh"]
    if refresh["mode"] == "sync" and refresh.get("scope") == "partial":
        full = f"full every {refresh['full_every']}" if refresh["full_every"] else "full only at the end"
        return f"partial {round(100 * refresh['partial_fraction'])}% ({full})"
    return ARMS[(refresh["mode"], refresh.get("scope", "full"))]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def collect(sweep_dir: Path, *more: Path) -> dict[str, dict]:
    """Arms of `sweep_dir`, then those of each further directory labelled `<arm> [<directory name>]` (a rerun of
    some arms under other code), all scored against the first directory's full and stale arms."""
    arms: dict[str, list[tuple[int, dict]]] = {}
    runs_of = [(run, "") for run in sorted(p for p in sweep_dir.iterdir() if (p / "metrics.json").is_file())]
    for extra in more:
        runs_of += [(run, f" [{extra.name}]") for run in sorted(p for p in extra.iterdir()
                                                                if (p / "metrics.json").is_file())]
    for run, suffix in runs_of:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        arms.setdefault(_arm(cfg) + suffix, []).append((cfg["trainer"]["seed"], metrics))
    out = {}
    for arm, runs in arms.items():
        row = {"seeds": sorted(seed for seed, _ in runs)}
        for key, name in (("test/recall@5", "r5"), ("test/em", "em"), ("refresh/total_wall_s", "refresh_s"),
                          ("refresh/total_rows", "rows"), ("refresh/mean_overlap_vs_full", "overlap_after")):
            values = [m[key] for _, m in runs if key in m]
            if values:
                row[name], row[f"{name}_std"] = _mean_std(values)
        before = [m.get("refresh/mean_stale_overlap_vs_full", m.get("refresh/mean_overlap")) for _, m in runs]
        if all(v is not None for v in before) and "stale" not in arm:
            row["overlap_before"], row["overlap_before_std"] = _mean_std(before)
        row["per_seed_r5"] = {seed: m["test/recall@5"] for seed, m in runs}
        out[arm] = row
    full, stale = out.get(ARMS[("sync", "full")]), out.get(ARMS[("stale", "full")])
    for row in out.values():
        if full and stale and full["r5"] != stale["r5"]:
            row["gain_kept"] = (row["r5"] - stale["r5"]) / (full["r5"] - stale["r5"])
        if full and "refresh_s" in row and full.get("refresh_s"):
            row["cost"] = row["refresh_s"] / full["refresh_s"]
    return out


def markdown(table: dict[str, dict]) -> str:
    lines = ["| arm | seeds | R@5 | EM | refresh s / run | passages encoded / run | overlap@5 before | after | "
             "gain kept | cost |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]

    def pm(row: dict, key: str, scale: float = 100.0, digits: int = 1) -> str:
        if key not in row:
            return "—"
        return f"{scale * row[key]:.{digits}f} ± {scale * row[key + '_std']:.{digits}f}"

    def num(row: dict, key: str, fmt: str) -> str:
        return format(row[key], fmt) if key in row else "—"

    for arm, row in table.items():
        cells = [arm, str(len(row["seeds"])), pm(row, "r5"), pm(row, "em"), pm(row, "refresh_s", 1, 1),
                 num(row, "rows", ",.0f"), pm(row, "overlap_before", 1, 3), pm(row, "overlap_after", 1, 3),
                 num(row, "gain_kept", ".2f"), num(row, "cost", ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    out_dir = Path(next((a.split("=", 1)[1] for a in argv if a.startswith("out=")),
                        "experiments/results/refresh_scope"))
    table = collect(*(Path(a) for a in argv if "=" not in a))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(table, indent=1))
    text = markdown(table)
    (out_dir / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
