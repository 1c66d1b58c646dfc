"""`rag-e2e` command line: a table of subcommands, each a plain function taking `key=value` overrides."""

from __future__ import annotations

import sys
from pathlib import Path

USAGE = """usage: rag-e2e <command> [args]

  train [-m] [overrides...]            train and evaluate (Hydra's command line); prints `metrics: <path>` last;
                                       -m runs a multirun: a grid (`retriever.k=1,5,10`) or a sweep file
                                       (`sweep=ablation_k`, `sweep=optuna_synthetic`), see README
  eval <checkpoint> [overrides...]     evaluate a checkpoint (config from its run directory)
  config [overrides...]                print the resolved config and exit
  report <run dirs...> [out=DIR] [title=TEXT] [label=KEY,KEY] [order=A,B] [metrics=K,K] [readme=README.md]
                                       Markdown + LaTeX tables (mean ± std over seeds) and PNG plots; with
                                       readme=, the table replaces the README's <!-- results --> block

overrides: `group=name` (e.g. experiment=squad/rag_end2end, data=squad) or `a.b=value` (e.g. trainer.max_steps=100)
"""


def cmd_train(args: list[str]) -> int:
    from rag_e2e.launch import main as launch

    return launch(args)


def cmd_eval(args: list[str]) -> int:
    from rag_e2e.compose import load_run_config
    from rag_e2e.errors import ConfigError
    from rag_e2e.train import evaluate, run_dir_of

    if not args:
        raise ConfigError("rag-e2e eval needs a checkpoint path: rag-e2e eval runs/<run>/checkpoints/last.ckpt")
    checkpoint = Path(args[0])
    if not checkpoint.is_file():
        raise ConfigError(f"{checkpoint}: checkpoint not found")
    run_dir = run_dir_of(checkpoint)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir / 'config.yaml'}: not found; eval reads the run's config from beside it")
    metrics_path = evaluate(checkpoint, load_run_config(run_dir / "config.yaml", args[1:]))
    print(f"metrics: {metrics_path}")
    return 0


def cmd_config(args: list[str]) -> int:
    from rag_e2e.compose import compose, to_yaml

    print(to_yaml(compose(args)), end="")
    return 0


def cmd_report(args: list[str]) -> int:
    from rag_e2e.errors import ConfigError
    from rag_e2e.eval.report import DEFAULT_METRICS, collect_runs, update_readme, write_report

    options = {"out": "report", "title": "Results", "label": "name", "order": "", "readme": "", "metrics": ""}
    paths = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in options:
            options[key] = value
        elif sep:
            raise ConfigError(f"rag-e2e report: unknown option `{key}` (options: {', '.join(options)})")
        else:
            paths.append(Path(arg))
    if not paths:
        raise ConfigError("rag-e2e report needs run directories (or folders holding them)")
    runs = collect_runs(paths, label_keys=tuple(options["label"].split(",")))
    order = [o for o in options["order"].split(",") if o] or None
    metrics = [m for m in options["metrics"].split(",") if m] or list(DEFAULT_METRICS)
    written = write_report(runs, Path(options["out"]), title=options["title"], order=order, metrics=metrics)
    for path in written.values():
        print(f"wrote {path}")
    if options["readme"]:
        update_readme(Path(options["readme"]), written["results.md"], Path(options["out"]))
        print(f"updated {options['readme']}")
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "config": cmd_config, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    from rag_e2e.errors import RagE2EError

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except RagE2EError as err:
        print(f"rag-e2e: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
