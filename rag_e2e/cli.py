"""`rag-e2e` command line: a table of subcommands, each a plain function taking `key=value` overrides."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rag_e2e.eval.report import RunResult

USAGE = """usage: rag-e2e <command> [args]

  train [-m] [-v] [overrides...]       train and evaluate (Hydra's command line); prints `metrics: <path>` last;
                                       -m runs a multirun: a grid (`retriever.k=1,5,10`) or a sweep file
                                       (`sweep=ablation_k`, `sweep=optuna_synthetic`), see README
  eval <checkpoint> [overrides...]     evaluate a checkpoint (config from its run directory)
  config [overrides...]                print the resolved config and exit
  report <run dirs...> [out=DIR] [title=TEXT] [label=KEY,KEY] [order=A,B] [metrics=K,K] [readme=README.md]
         [baseline=LABEL[,LABEL]] [paired=recall@5,em,f1] [block=NAME]
                                       Markdown + LaTeX tables (mean ± std over seeds) and PNG plots; with
                                       readme=, the table replaces the README's <!-- results --> block (block=:
                                       <!-- results:NAME:start/end -->); with
                                       baseline=, each system minus it per question (seeds pooled), with paired
                                       bootstrap 95% CIs (one table per baseline)
  report --html <run dirs...> [out=DIR] [label=KEY,KEY]
                                       instead: one static page per run (metrics, plots, every test question
                                       with its passages); into each run dir as report.html, or out=DIR/<label>.html
  data get <names...> [root=DIR] [from=FILE|DIR] [force=true]
                                       fetch public datasets (squad nq_open covidqa trivia_qa psgs_w100) into the
                                       data root the configs read (data.root: $RAG_E2E_DATA, default ./data);
                                       from= a local copy instead of the network (checked by sha256)
  data list                            each dataset, where it comes from and the files it writes
  prepare <files or folders...> out=DIR [chunk_tokens=N] [overlap=N] [tokenizer=NAME] [qa=SQUAD.json] [strict=true]
                                       raw .txt/.md/.html/.pdf/.jsonl -> passages.parquet + stats.json (resumable);
                                       qa= aligns a SQuAD file to the passages (qa.jsonl; train with data=prepared)
  trec <run dir | predictions.jsonl> [out=DIR] [tag=NAME] [measures=nDCG@10,RR,Success@5]
                                       the test retrieval as TREC run + qrels files, scored by ir_measures
                                       (trec_eval's measures: nDCG@10 as BEIR reports it)
  export <run dir> <out dir> [checkpoint=PATH] [lora=merged|adapter] [overrides...]
                                       a self-contained pipeline folder (encoders, reader, passages, one index)
  ask <pipeline dir> "question"... [k=N] [--json] [index=hnsw|ivf_pq] [int8=true] [dtype=bfloat16] [compile=true]
                                       [nprobe=N nlist=N pq_m=N | ef_search=N hnsw_m=N]  (also for serve)
                                       answer with the cited passages (ids, titles, scores)
  serve <pipeline dir> [host=H] [port=P] [max_batch=N] [max_wait_ms=MS] [max_k=N] [max_questions=N]
        [max_question_chars=N] [max_body_bytes=N] [max_queue=N] [request_timeout_s=S] [max_queue_wait_ms=MS]
                                       HTTP JSON API: POST /ask, GET /health, /ready, /docs (dynamic batching;
                                       503 past max_queue or the waiting budget, 504 past the deadline;
                                       RAG_E2E_API_KEY set: a bearer token is required)

overrides: `group=name` (e.g. experiment=squad/rag_end2end, data=squad) or `a.b=value` (e.g. trainer.max_steps=100)
"""


def cmd_train(args: list[str]) -> int:
    from rag_e2e.console import VERBOSE_ENV
    from rag_e2e.launch import main as launch

    if any(a in ("-v", "--verbose") for a in args):  # ours, not Hydra's: the libraries' notices too
        os.environ[VERBOSE_ENV] = "1"
        args = [a for a in args if a not in ("-v", "--verbose")]
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
    from rag_e2e.extras import require

    require("report", "rag-e2e report")
    from rag_e2e.errors import ConfigError
    from rag_e2e.eval.paired import DEFAULT_PAIRED
    from rag_e2e.eval.report import DEFAULT_METRICS, collect_runs, update_readme, write_report

    options = {"out": "report", "title": "Results", "label": "name", "order": "", "readme": "", "metrics": "",
               "baseline": "", "paired": "", "block": ""}
    html, given = "--html" in args, set()
    paths = []
    for arg in (a for a in args if a != "--html"):
        key, sep, value = arg.partition("=")
        if sep and key in options:
            options[key] = value
            given.add(key)
        elif sep:
            raise ConfigError(f"rag-e2e report: unknown option `{key}` (options: {', '.join(options)})")
        else:
            paths.append(Path(arg))
    if not paths:
        raise ConfigError("rag-e2e report needs run directories (or folders holding them)")
    runs = collect_runs(paths, label_keys=tuple(options["label"].split(",")))
    if html:
        ignored = sorted(given - {"out", "label"})
        if ignored:
            raise ConfigError(f"rag-e2e report --html: `{ignored[0]}` is for the tables; --html takes out= and label=")
        return _report_pages(runs, Path(options["out"]) if "out" in given else None)
    order = [o for o in options["order"].split(",") if o] or None
    metrics = [m for m in options["metrics"].split(",") if m] or list(DEFAULT_METRICS)
    paired = [m for m in options["paired"].split(",") if m] or list(DEFAULT_PAIRED)
    written = write_report(runs, Path(options["out"]), title=options["title"], order=order, metrics=metrics,
                           baseline=[b for b in options["baseline"].split(",") if b], paired=paired)
    for path in written.values():
        print(f"wrote {path}")
    if options["readme"]:
        update_readme(Path(options["readme"]), written["results.md"], Path(options["out"]), block=options["block"])
        print(f"updated {options['readme']}")
    return 0


def _report_pages(runs: list[RunResult], out_dir: Path | None) -> int:
    """`rag-e2e report --html`: each run's page, into `out_dir` (named by label) or its run directory."""
    from rag_e2e.eval.html_report import page_names, write_html_report

    for run, name in zip(runs, page_names(runs)):
        page = write_html_report(run.path, out_dir / name if out_dir else None, label=run.label)
        print(f"wrote {page}")
    return 0


def cmd_trec(args: list[str]) -> int:
    from rag_e2e.extras import require

    require("trec", "rag-e2e trec")
    from rag_e2e.errors import ConfigError
    from rag_e2e.eval import trec
    from rag_e2e.eval.html_report import read_predictions

    options = {"out": "", "tag": "", "measures": ",".join(trec.DEFAULT_MEASURES)}
    rest = _positional(args, options)
    if len(rest) != 1:
        raise ConfigError("usage: rag-e2e trec <run dir | predictions.jsonl> [out=DIR] [tag=NAME] [measures=M,M]")
    source = Path(rest[0])
    path = source / "predictions.jsonl" if source.is_dir() else source
    out = Path(options["out"]) if options["out"] else path.parent
    measures = [m for m in options["measures"].split(",") if m]
    try:
        summary = trec.write(read_predictions(path), out, options["tag"] or path.parent.name or "rag_e2e", measures,
                             source=path)
    except (ValueError, NameError) as err:  # ir_measures: a measure it cannot parse, or does not know
        raise ConfigError(f"rag-e2e trec: measures: {err}") from None
    print(f"{summary['judged']} of {summary['questions']} questions judged (gold passage ids), "
          f"{summary['retrieved_per_question']} passages each")
    for name, value in summary["measures"].items():
        print(f"  {name:<12} {value:.4f}")
    print(f"wrote {out / 'run.trec'}, {out / 'qrels.trec'}, {out / 'trec_metrics.json'}")
    return 0


def _positional(args: list[str], options: dict[str, str]) -> list[str]:
    """Fill `options` from `key=value` args whose key it names; the other args, in order."""
    from rag_e2e.compose import split_options

    found, rest = split_options(args, options)
    options.update(found)
    return rest


def cmd_data(args: list[str]) -> int:
    from rag_e2e.data.catalog import DATASETS, data_root, get
    from rag_e2e.errors import ConfigError

    options = {"root": "", "from": "", "force": "false"}
    rest = _positional(args, options)
    if rest[:1] == ["list"] and len(rest) == 1:
        for d in DATASETS.values():
            print(f"{d.name:<10} {d.about}\n{'':<10} " + "  ".join(d.files))
        return 0
    if rest[:1] != ["get"] or len(rest) < 2:
        raise ConfigError("usage: rag-e2e data get <names...> [root=DIR] [from=FILE|DIR] [force=true] | "
                          f"rag-e2e data list  (datasets: {' '.join(DATASETS)})")
    if options["force"] not in ("true", "false"):
        raise ConfigError(f"`force` must be true or false, got {options['force']!r}")
    for name in rest[1:]:
        paths, fetched = get(name, options["root"] or None, options["from"] or None, force=options["force"] == "true")
        for path in paths:
            print(f"{name}: {path}" + ("" if fetched else "  (already there; force=true fetches again)"))
    print(f"data root: {data_root(options['root'] or None)}")
    return 0


def cmd_prepare(args: list[str]) -> int:
    from rag_e2e.extras import require

    require("prepare", "rag-e2e prepare")
    from rag_e2e.config import PrepareConfig
    from rag_e2e.errors import ConfigError
    from rag_e2e.prepare.pipeline import CORPUS, prepare
    from rag_e2e.prepare.shards import SHARDS

    options: dict[str, str] = {}
    inputs = []
    for arg in args:  # `key=value` is an option (unknown keys are refused there) unless it names an existing file
        key, sep, value = arg.partition("=")
        if sep and key.isidentifier() and not Path(arg).exists():
            options[key] = value
        else:
            inputs.append(arg)
    cfg = PrepareConfig.from_options(options)
    if not inputs:
        raise ConfigError("usage: rag-e2e prepare <files or folders...> out=DIR [key=value...]")
    stats = prepare(inputs, cfg)
    skipped = stats["files"]["skipped"]
    print(f"documents: {stats['documents']} ({stats['duplicates']['exact']} exact and {stats['duplicates']['near']} "
          f"near duplicates dropped); passages: {stats['passages']} (at most {stats['tokens']['max']} tokens); "
          f"files: {stats['files']['done']} done ({stats['files']['resumed']} resumed), {len(skipped)} skipped")
    if "qa" in stats:
        print(f"questions aligned: {stats['qa']['aligned']} of {stats['qa']['questions']}")
    print(f"corpus: {Path(cfg.out) / CORPUS}; per-file intermediates, reused by the next run: "
          f"{Path(cfg.out) / SHARDS} (hidden: a Parquet dataset loader of the folder skips it)")
    return 0


def cmd_export(args: list[str]) -> int:
    from rag_e2e.errors import ConfigError
    from rag_e2e.inference.export import export_run

    if len(args) < 2:  # the paths come first: Hydra sweep directories have `=` in their names
        raise ConfigError("usage: rag-e2e export <run dir> <out dir> [checkpoint=PATH] [lora=merged|adapter] "
                          "[overrides...]")
    options = {"checkpoint": "", "lora": "merged"}
    overrides = _positional(args[2:], options)
    out = export_run(args[0], args[1], checkpoint=options["checkpoint"] or None, lora=options["lora"],
                     overrides=overrides, progress=True)
    print(f"exported: {out}")
    return 0


INDEX_OPTIONS = ("nlist", "nprobe", "pq_m", "hnsw_m", "ef_search")  # with index=: build_index's settings
PIPELINE_OPTIONS = {"device": "", "index": "", "dtype": "float32", "int8": "false", "compile": "false",
                    **dict.fromkeys(INDEX_OPTIONS, "")}


def load_pipeline(path: str, options: dict[str, str]):
    """A pipeline folder loaded with the inference options (`index=hnsw ef_search=64`, `int8=true`, ...); options
    not given take `PIPELINE_OPTIONS`' values."""
    from rag_e2e.errors import ConfigError
    from rag_e2e.inference.optimize import Optimizations, optimize
    from rag_e2e.inference.pipeline import RagPipeline

    options = {**PIPELINE_OPTIONS, **options}
    flags = {}
    for key in ("int8", "compile"):
        if options[key] not in ("true", "false"):
            raise ConfigError(f"`{key}` must be true or false, got {options[key]!r}")
        flags[key] = options[key] == "true"
    for key in INDEX_OPTIONS:
        if options[key] and not options[key].isdigit():
            raise ConfigError(f"`{key}` must be a positive integer, got {options[key]!r}")
    index_params = {key: int(options[key]) for key in INDEX_OPTIONS if options[key]}
    try:
        opts = Optimizations(dtype=options["dtype"], **flags)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if index_params and not options["index"]:
        raise ConfigError(f"{', '.join(index_params)} set the index that `index=hnsw|ivf_pq` rebuilds; add `index=`")
    pipeline = RagPipeline.from_pretrained(path, index_kind=options["index"] or None, index_params=index_params,
                                           device=options["device"] or "cpu")
    try:
        return optimize(pipeline, opts)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def cmd_ask(args: list[str]) -> int:
    import json

    from rag_e2e.errors import ConfigError

    as_json = "--json" in args
    options = {"k": "", **PIPELINE_OPTIONS}
    rest = _positional([a for a in args if a != "--json"], options)
    if len(rest) < 2:
        raise ConfigError('usage: rag-e2e ask <pipeline dir> "question" ["question" ...] [k=N] [--json]')
    if options["k"] and not options["k"].isdigit():
        raise ConfigError(f"rag-e2e ask: k must be a positive integer, got {options['k']!r}")
    pipeline = load_pipeline(rest[0], options)
    k = int(options["k"]) if options["k"] else None
    if k is not None and not 1 <= k <= pipeline.index.size:
        raise ConfigError(f"rag-e2e ask: k must be in [1, {pipeline.index.size}] (the corpus size), got {k}")
    answers = pipeline.ask(rest[1:], k=k)
    if as_json:
        print(json.dumps([a.to_dict() for a in answers], indent=2, ensure_ascii=False))
        return 0
    for a in answers:
        print(f"Q: {a.question}\nA: {a.answer}")
        for c in a.passages:
            text = c.text if len(c.text) <= 160 else c.text[:157] + "..."
            print(f"  [{c.rank}] {c.pid}  {c.score:.3f}  {c.title}: {text}")
    return 0


def cmd_serve(args: list[str]) -> int:
    from rag_e2e.extras import require

    require("serve", "rag-e2e serve")
    from rag_e2e.errors import ConfigError
    from rag_e2e.inference.serve import ServeLimits, serve

    limits = {"max_body_bytes": "", "max_questions": "", "max_question_chars": "", "max_k": "", "max_batch": "",
              "max_wait_ms": "", "max_queue": "", "request_timeout_s": "", "max_queue_wait_ms": ""}
    options = {"host": "127.0.0.1", "port": "8000", **PIPELINE_OPTIONS, **limits}
    rest = _positional(args, options)
    if len(rest) != 1:
        raise ConfigError("usage: rag-e2e serve <pipeline dir> [host=127.0.0.1] [port=8000] [max_batch=16] "
                          "[max_wait_ms=5] [max_k=20] [max_questions=32] [max_body_bytes=65536] [max_queue=256] "
                          "[request_timeout_s=30] [max_queue_wait_ms=0]  (RAG_E2E_API_KEY: require a bearer token)")
    chosen = {key: _number(key, options[key], float if key.endswith(("_ms", "_s")) else int)
              for key in limits if options[key]}
    port = _number("port", options["port"], int)
    try:
        serve_limits = ServeLimits(**chosen)
    except ValueError as err:
        raise ConfigError(f"rag-e2e serve: {err}") from None
    serve(load_pipeline(rest[0], options), host=options["host"], port=port, limits=serve_limits,
          api_key=os.environ.get("RAG_E2E_API_KEY") or None)
    return 0


def _number(key: str, value: str, kind: type) -> int | float:
    """`key=value` parsed as `kind`, or one line naming the key."""
    from rag_e2e.errors import ConfigError

    try:
        return kind(value)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"`{key}` must be {what}, got {value!r}") from None


def command_help(name: str) -> str:
    """The usage lines of one command, cut from USAGE."""
    lines, out = USAGE.splitlines(), []
    for line in lines:
        if line.startswith(f"  {name} "):
            out.append(line)
        elif out and line.startswith("     "):  # its continuation lines
            out.append(line)
        elif out:
            break
    return "usage: rag-e2e " + "\n".join(out).strip() + "\n"


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "config": cmd_config, "report": cmd_report,
            "data": cmd_data, "prepare": cmd_prepare, "export": cmd_export, "trec": cmd_trec,
            "ask": cmd_ask, "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    from rag_e2e.errors import RagE2EError

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] != "train" and any(a in ("-h", "--help") for a in argv[1:]):  # train: Hydra's own --help
        print(command_help(argv[0]))
        return 0
    try:
        return COMMANDS[argv[0]](argv[1:])
    except RagE2EError as err:
        print(f"rag-e2e: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk outside the atomic writers (which name their file): still one line
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"rag-e2e: error: {err.filename or 'a write'}: no space left on the disk ({err.strerror})",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
