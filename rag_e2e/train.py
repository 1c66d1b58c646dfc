"""Entry points behind the CLI: assemble a run from its config, train, evaluate, write the run directory.

The config stops here: everything below receives plain typed arguments.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import OmegaConf
from transformers import AutoModel, PreTrainedTokenizerBase

from rag_e2e import atomic
from rag_e2e.compose import to_yaml
from rag_e2e.config import RunConfig
from rag_e2e.console import quiet_libraries
from rag_e2e.data.mapped import row_lookup
from rag_e2e.data.sources import RagData, load_data, sample_qids
from rag_e2e.errors import ConfigError
from rag_e2e.kernels import force_cpu_search
from rag_e2e.lightning.checkpoint_io import AtomicCheckpointIO, load_checkpoint
from rag_e2e.lightning.datamodule import QACollator, RagDataModule
from rag_e2e.lightning.module import RagLitModule
from rag_e2e.lightning.progress import StepProgressBar
from rag_e2e.lightning.refresh_callback import IndexRefreshCallback
from rag_e2e.lightning.tensorboard import RunTensorBoardLogger
from rag_e2e.losses import ObjectiveSettings
from rag_e2e.models.generator import build_reader, frozen_weight_names
from rag_e2e.models.rag import RagModel
from rag_e2e.models.reader import Reader
from rag_e2e.retrieval.encoders import BiEncoder, build_encoder_model, load_tokenizer, resolve_name
from rag_e2e.retrieval.refresh import IndexBuilder
from rag_e2e.run_lock import exclusive_run_dir
from rag_e2e.schedule import RefreshSchedule


@dataclass
class Assembled:
    """Everything a run needs, built from one config."""

    data: RagData
    module: RagLitModule
    datamodule: RagDataModule
    refresh: IndexRefreshCallback  # builds the index when training/testing starts, and rebuilds it on schedule


def _load_prefixed(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], prefix: str,
                   may_lack: set[str] = frozenset()) -> None:
    """Load the `prefix`ed part of a checkpoint; only weights named in `may_lack` may be absent from it."""
    part = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    missing, unexpected = module.load_state_dict(part, strict=False)
    lacking = [key for key in missing if key not in may_lack]
    if lacking or unexpected:
        name = f"missing {prefix}{lacking[0]}" if lacking else f"unexpected {prefix}{unexpected[0]}"
        raise ConfigError(f"checkpoint does not match this config's model ({name}); was it written by a run with "
                          "another `encoder` or `generator` config?")


def _check_against_data(cfg: RunConfig, data: RagData) -> None:
    """What the config asks of the data, checked before any model is built (one line naming the key)."""
    n, where = len(data.corpus), data.corpus_source
    r = cfg.retriever
    for key, value in (("retriever.k", r.k), ("retriever.rerank_candidates", r.rerank_candidates),
                       ("eval.ks", max(cfg.eval.ks))):
        if value > n:
            raise ConfigError(f"`{key}`={value} asks for more passages than the corpus holds ({n} in {where}); "
                              f"set it <= {n}")
    m = cfg.model
    if (m.reader_warmup_steps > 0 or m.reader_ready_nll is not None) and not data.reader and cfg.trainer.max_steps:
        raise ConfigError(f"`model.reader_warmup_steps` trains the reader alone on reader-only examples, but "
                          f"{where} gives none (no question has a context); set `model.reader_warmup_steps=0` and "
                          "`model.reader_ready_nll=null`")


UNUSED_TRUE, UNUSED_FALSE = "_find_unused_parameters_true", "_find_unused_parameters_false"


def _strategy(cfg: RunConfig) -> str:
    """`trainer.strategy`, in its `find_unused_parameters=True` spelling when a warm-up phase leaves the retriever
    unused (the reader trains alone), which DDP's default rejects at the next step: ddp, ddp_spawn, ddp_fork and
    ddp_notebook each have one in Lightning's registry."""
    from lightning.pytorch.strategies import StrategyRegistry

    name = cfg.trainer.strategy
    if cfg.model.reader_warmup_steps <= 0 or not name.startswith("ddp") or name.endswith(UNUSED_TRUE):
        return name
    if name.endswith(UNUSED_FALSE):
        raise ConfigError(f"`trainer.strategy={name}` rejects the parameters `model.reader_warmup_steps` leaves "
                          f"unused (the retriever, while the reader trains alone): use "
                          f"{name.removesuffix(UNUSED_FALSE)}{UNUSED_TRUE}, or set `model.reader_warmup_steps=0`")
    return name + UNUSED_TRUE if name + UNUSED_TRUE in StrategyRegistry else name


def index_params(cfg: RunConfig) -> dict:
    """`build_index` keyword arguments for `cfg.index.kind`."""
    i = cfg.index
    return {"exact": {}, "faiss_flat": {}, "ivf_flat": {"nlist": i.nlist, "nprobe": i.nprobe, "seed": i.seed},
            "ivf_pq": {"nlist": i.nlist, "nprobe": i.nprobe, "pq_m": i.pq_m, "pq_bits": i.pq_bits, "seed": i.seed},
            "hnsw": {"hnsw_m": i.hnsw_m, "ef_search": i.ef_search}}[i.kind]


def build_encoder(cfg: RunConfig, state_dict: dict[str, torch.Tensor] | None = None
                  ) -> tuple[BiEncoder, PreTrainedTokenizerBase]:
    """The bi-encoder `cfg.encoder` describes, with a RagLitModule checkpoint's weights when `state_dict` is given,
    and the tokenizer both towers read with."""
    enc_cfg = cfg.encoder
    tokenizer = load_tokenizer(enc_cfg.name_or_path or enc_cfg.tokenizer)
    encoder = BiEncoder(build_encoder_model(enc_cfg.name_or_path, tokenizer, hidden_size=enc_cfg.hidden_size,
                                            num_layers=enc_cfg.num_layers, num_heads=enc_cfg.num_heads,
                                            intermediate_size=enc_cfg.intermediate_size, seed=enc_cfg.seed),
                        pooling=enc_cfg.pooling, shared=enc_cfg.shared_towers,
                        passage_encoder=AutoModel.from_pretrained(resolve_name(enc_cfg.passage_name_or_path))
                        if enc_cfg.passage_name_or_path else None)
    if state_dict is not None:
        _load_prefixed(encoder, state_dict, "rag.encoder.")
    return encoder, tokenizer


def build_trained_reader(cfg: RunConfig, state_dict: dict[str, torch.Tensor] | None = None) -> Reader:
    """The reader `cfg.generator` describes, with a checkpoint's weights when `state_dict` is given (weights that
    never train, e.g. a LoRA base, come from the base model and may be absent from it)."""
    reader = build_reader(cfg.generator)
    if state_dict is not None:
        _load_prefixed(reader.model, state_dict, "rag.generator.", may_lack=frozen_weight_names(reader.model))
    return reader


def answered_questions(cfg: RunConfig, data: RagData) -> dict[str, frozenset[str] | None]:
    """The questions the reader answers in validation and test (`eval.*generation_questions`; None: all)."""
    seed = cfg.data.split_seed
    return {"val": sample_qids(data.dev, cfg.eval.val_generation_questions, seed),
            "test": sample_qids(data.test, cfg.eval.generation_questions, seed)}


def assemble(cfg: RunConfig, base_dir: Path | None = None, progress: bool = True,
             state_dict: dict[str, torch.Tensor] | None = None, run_dir: Path | None = None) -> Assembled:
    """config -> data -> encoders -> generator -> RagModel -> Lightning module, datamodule and index callback.

    The index is built by the callback when training or testing starts (so under DDP each rank encodes only its
    shard). `state_dict` (a RagLitModule checkpoint's) is loaded first, so the index comes from the checkpoint's
    passage tower. With `run_dir` the live index is saved under <run_dir>/index for resuming.
    """
    force_cpu_search(cfg.index.search_backend)  # the process-wide exact CPU search (a machine choice)
    data = load_data(cfg.data, base_dir)
    _check_against_data(cfg, data)
    enc_cfg, gen_cfg = cfg.encoder, cfg.generator
    encoder, q_tokenizer = build_encoder(cfg, state_dict)
    r = cfg.retriever
    builder = IndexBuilder(data.corpus, q_tokenizer, enc_cfg.max_passage_length, r.encode_batch_size,
                           kind=cfg.index.kind, index_params=index_params(cfg),
                           embeddings_dir=Path(cfg.index.embeddings_dir) if cfg.index.embeddings_dir else None,
                           embeddings_dtype=cfg.index.embeddings_dtype, shard_size=cfg.index.shard_size)
    reader = build_trained_reader(cfg, state_dict)
    # Closed book reads one empty passage, read_gold the gold one: the marginal over one document is the reader NLL.
    k = 1 if r.closed_book or r.read_gold else r.k
    rag = RagModel(encoder, reader, data.corpus, None, k=k,
                   temperature=r.temperature, marginal="token" if cfg.model.loss == "token" else "sequence",
                   decoding=cfg.eval.decoding, max_source_length=gen_cfg.max_source_length,
                   max_target_length=gen_cfg.max_target_length, passage_tokenizer=q_tokenizer,
                   max_passage_length=enc_cfg.max_passage_length, fresh_passages=r.train_passage_encoder,
                   rerank_candidates=r.rerank_candidates, closed_book=r.closed_book,
                   read_gold=r.read_gold)
    m = cfg.model
    module = RagLitModule(rag, lr=m.lr, retriever_lr=m.retriever_lr, weight_decay=m.weight_decay,
                          warmup_steps=m.warmup_steps, objective=m.loss,
                          objective_settings=ObjectiveSettings(
                              prior_temperature=r.temperature, lm_temperature=m.lm_temperature,
                              lsr_temperature=m.lsr_temperature, label_smoothing=m.label_smoothing,
                              gumbel_samples=m.gumbel_samples, gumbel_set_size=m.gumbel_set_size,
                              gumbel_temperature=m.gumbel_temperature, reader_mix=m.reader_mix),
                          freeze_query_encoder=r.query_frozen,
                          train_passage_encoder=r.train_passage_encoder, passage_lr=m.passage_lr,
                          passage_ready_recall=m.passage_ready_recall,
                          reader_loss_weight=m.reader_loss_weight, reader_warmup_steps=m.reader_warmup_steps,
                          reader_ready_nll=m.reader_ready_nll,
                          eval_ks=tuple(cfg.eval.ks), num_beams=cfg.eval.num_beams,
                          max_new_tokens=cfg.eval.max_new_tokens, reader_base=gen_cfg.name_or_path,
                          answered=answered_questions(cfg, data))
    collator = QACollator(q_tokenizer, rag.labels, enc_cfg.max_query_length)
    datamodule = RagDataModule(data.train, data.dev, data.test, data.reader, collator,
                               batch_size=cfg.data.batch_size, eval_batch_size=cfg.data.eval_batch_size,
                               reader_batch_size=cfg.data.reader_batch_size, num_workers=cfg.data.num_workers,
                               use_reader=m.reader_loss_weight > 0, seed=cfg.trainer.seed)
    probe_questions = [ex.question for ex in data.train[: cfg.refresh.probe_size]]
    probe = q_tokenizer(probe_questions, truncation=True, max_length=enc_cfg.max_query_length, padding=True,
                        return_tensors="pt")
    save = cfg.refresh.save_index and run_dir is not None
    mode = "off" if cfg.refresh.mode == "stale" else cfg.refresh.mode  # stale: built once, as off
    refresh = IndexRefreshCallback(builder, RefreshSchedule.parse(cfg.refresh.schedule), mode=mode,
                                   probe=(probe["input_ids"], probe["attention_mask"]), k=rag.k,
                                   index_dir=run_dir / "index" if save else None, progress=progress,
                                   cpu_worker_threads=cfg.refresh.cpu_worker_threads,
                                   cpu_yield_threads=cfg.refresh.cpu_yield_threads,
                                   cpu_worker_nice=cfg.refresh.cpu_worker_nice, scope=cfg.refresh.scope,
                                   partial_fraction=cfg.refresh.partial_fraction, full_every=cfg.refresh.full_every,
                                   probe_share=cfg.refresh.probe_share, audit=cfg.refresh.audit)
    return Assembled(data, module, datamodule, refresh)


def _loggers(cfg: RunConfig, run_dir: Path) -> list[Logger]:
    loggers: list[Logger] = []
    if cfg.logger.csv:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=""))
    if cfg.logger.tensorboard:
        loggers.append(RunTensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="",
                                            default_hp_metric=False))
    if cfg.logger.wandb:
        os.environ.setdefault("WANDB_MODE", "offline")  # no network unless the user goes online
        os.environ.setdefault("WANDB_SILENT", "true")
        # One W&B run per run_dir: a resumed run continues it instead of starting a second one.
        wandb = WandbLogger(project=cfg.logger.project, group=cfg.logger.group, name=run_dir.name,
                            save_dir=str(run_dir), config=OmegaConf.to_container(OmegaConf.structured(cfg)),
                            id=wandb_run_id(run_dir), resume="allow")
        # Lightning always passes `anonymous` (None when unset), and W&B warns on every run that it has no effect
        getattr(wandb, "_wandb_init", {}).pop("anonymous", None)
        loggers.append(wandb)
    return loggers


def wandb_run_id(run_dir: Path) -> str:
    """The W&B run id of `run_dir`: made on first use and kept in <run_dir>/wandb_id (rank 0 writes it; under DDP
    only rank 0 logs)."""
    path = run_dir / "wandb_id"
    if path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    atomic.write_text(path, run_id + "\n")
    return run_id


def build_trainer(cfg: RunConfig, run_dir: Path, refresh: IndexRefreshCallback, progress: bool = True,
                  log: bool = True) -> L.Trainer:
    """The Lightning Trainer from `cfg.trainer`, with the index callback, checkpointing, progress bar and (unless
    `log` is off) loggers."""
    t = cfg.trainer
    callbacks = [refresh, ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="step{step}",
                                          save_last=True, auto_insert_metric_name=False)]
    if progress:
        callbacks.append(StepProgressBar())
    try:
        return _trainer(cfg, run_dir, callbacks, progress, log)
    except (ValueError, MisconfigurationException) as err:  # Lightning's own refusals (e.g. FSDP without a GPU)
        raise ConfigError(f"`trainer.strategy={t.strategy}` `trainer.accelerator={t.accelerator}` "
                          f"`trainer.devices={t.devices}`: {' '.join(str(err).split())}") from None


def _trainer(cfg: RunConfig, run_dir: Path, callbacks: list, progress: bool, log: bool) -> L.Trainer:
    t = cfg.trainer
    return L.Trainer(max_steps=t.max_steps, val_check_interval=t.val_check_interval, check_val_every_n_epoch=None,
                     limit_val_batches=t.limit_val_batches, accelerator=t.accelerator, devices=t.devices,
                     num_nodes=t.num_nodes,
                     strategy=_strategy(cfg),
                     precision=t.precision, gradient_clip_val=t.gradient_clip_val,
                     log_every_n_steps=t.log_every_n_steps, num_sanity_val_steps=0, callbacks=callbacks,
                     logger=(log and _loggers(cfg, run_dir)) or False, enable_progress_bar=progress,
                     enable_model_summary=False, default_root_dir=str(run_dir), plugins=[AtomicCheckpointIO()],
                     accumulate_grad_batches=t.accumulate_grad_batches, max_time=t.max_time,
                     use_distributed_sampler=False,  # the datamodule shards, resumably
                     **t.args)


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint belongs to (checkpoints live in <run>/checkpoints/)."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def _write_json(path: Path, value) -> None:
    atomic.write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_predictions(path: Path, records: list[dict]) -> None:
    atomic.write_text(path, "".join(json.dumps(rec) + "\n" for rec in records))


def _test(trainer: L.Trainer, module: RagLitModule, dm: RagDataModule, prefix: str) -> dict[str, float]:
    module.test_prefix = prefix
    results = trainer.test(module, datamodule=dm, verbose=False)[0]
    return {key: float(value) for key, value in results.items()}


def _resolve_run_dir(cfg: RunConfig) -> Path:
    """`cfg.run_dir`, which `rag-e2e train` sets from Hydra's run or sweep directory (DDP ranks share it)."""
    if not cfg.run_dir:
        raise ConfigError("`run_dir` is not set: `rag-e2e train` takes it from Hydra (`hydra.run.dir`); a library "
                          "caller sets `run_dir=<dir>`")
    run_dir = Path(cfg.run_dir)
    if (run_dir / "metrics.json").is_file():
        raise ConfigError(f"{run_dir}: this run has finished (metrics.json exists); choose another `run_dir`")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _refresh_summary(history: list[dict]) -> dict[str, float]:
    """Means over the refreshes of one run (each is also logged as it happens)."""
    if not history:
        return {"refresh/count": 0}
    out: dict[str, float] = {"refresh/count": len(history),
                             "refresh/total_wall_s": round(sum(h["wall_s"] for h in history), 3)}
    if any("rows" in h for h in history):  # passages encoded by the refreshes (partial ones encode fewer)
        out["refresh/total_rows"] = sum(h.get("rows", 0) for h in history)
        out["refresh/partial_count"] = sum(1 for h in history if h.get("partial"))
    for key in ("wall_s", "passages_per_s", "overlap", "score_drift", "lag_steps", "overlap_vs_full",
                "stale_overlap_vs_full"):
        values = [h[key] for h in history if key in h]
        if values:
            out[f"refresh/mean_{key}"] = round(sum(values) / len(values), 4)
    return out


def _log_prediction_table(trainer: L.Trainer, records: list[dict], corpus, n: int) -> None:
    """A W&B table of sample test predictions: question, top passages, answer, gold."""
    loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
    if not loggers or not records:
        return
    row_of = row_lookup(corpus)
    text = {pid: corpus[row_of(pid)].text for r in records[:n] for pid in r["retrieved"][:3]}
    rows = [[r["question"], "\n".join(f"[{pid}] {text[pid][:200]}" for pid in r["retrieved"][:3]), r["answer"] or "",
             " | ".join(r["gold"]), r["gold_rank"]] for r in records[:n]]
    loggers[0].log_table(key="test/predictions", columns=["question", "top passages", "answer", "gold", "gold rank"],
                         data=rows)


def train(cfg: RunConfig, progress: bool = True) -> Path:
    """Run one experiment; returns the path of its metrics.json.

    The run directory holds config.yaml, metrics.json (init/* before training, test/* after), predictions.jsonl,
    predictions_init.jsonl, checkpoints/ and index/ (the live index). With `run_dir` set to a directory that has
    checkpoints/last.ckpt, training resumes from it (weights, optimizer, refresh schedule and live index).
    `cfg.run_dir` must be set (the CLI sets it from Hydra's run directory).
    """
    quiet_libraries()
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    return _train_in(cfg, _resolve_run_dir(cfg), progress)


def _train_in(cfg: RunConfig, run_dir: Path, progress: bool) -> Path:
    # Rank 0 (the process that starts DDP's others, or SLURM's rank 0) holds the run_dir for the whole run.
    first = os.environ.get("SLURM_PROCID", os.environ.get("LOCAL_RANK", "0")) == "0"
    with exclusive_run_dir(run_dir) if first else contextlib.nullcontext():
        return _train_locked(cfg, run_dir, progress, first)


def _train_locked(cfg: RunConfig, run_dir: Path, progress: bool, first: bool) -> Path:
    started = time.time()
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = last.is_file()
    if first:  # rank 0, before DDP starts the others (SLURM starts all ranks at once)
        # debris of writes a kill interrupted, resuming or not (a run killed before its first checkpoint starts over)
        for folder in (run_dir, run_dir / "checkpoints", run_dir / "index"):
            atomic.remove_leftovers(folder)
    parts = assemble(cfg, progress=progress, run_dir=run_dir)
    trainer = build_trainer(cfg, run_dir, parts.refresh, progress)
    main = trainer.is_global_zero
    if main:
        if not (run_dir / "config.yaml").is_file():
            atomic.write_text(run_dir / "config.yaml", to_yaml(cfg))
        print(f"data: {parts.data.summary()}" + (f" (resuming from {last})" if resume else ""))
    init_path = run_dir / "init_metrics.json"
    trains = cfg.trainer.max_steps > 0
    metrics: dict = {}
    if resume and init_path.is_file():
        metrics = json.loads(init_path.read_text())
    elif cfg.eval.before_training and trains:  # with no training, init/* would repeat test/*
        metrics = _test(trainer, parts.module, parts.datamodule, "init")
        if main:
            write_predictions(run_dir / "predictions_init.jsonl", parts.module.predictions)
            _write_json(init_path, metrics)
    if trains:
        trainer.fit(parts.module, datamodule=parts.datamodule, ckpt_path=str(last) if resume else None)
    metrics.update(_test(trainer, parts.module, parts.datamodule, "test"))
    metrics["time/total_s"] = round(time.time() - started, 1)
    metrics["train/steps"] = trainer.global_step
    if parts.module.rag_start_step is not None:  # None: no training step ran (an evaluation-only run)
        metrics["train/rag_start_step"] = parts.module.rag_start_step
    metrics.update(_refresh_summary(parts.refresh.history))
    if main:
        _log_prediction_table(trainer, parts.module.predictions, parts.data.corpus, cfg.eval.num_qualitative)
        write_predictions(run_dir / "predictions.jsonl", parts.module.predictions)
        _write_json(run_dir / "metrics.json", metrics)
    for logger in trainer.loggers:
        if isinstance(logger, RunTensorBoardLogger):
            logger.close()
    return run_dir / "metrics.json"


def evaluate(checkpoint: Path, cfg: RunConfig, progress: bool = True) -> Path:
    """Evaluate a checkpoint on the test split; writes eval_metrics.json and eval_predictions.jsonl beside the run."""
    L.seed_everything(cfg.trainer.seed, verbose=False)
    # The index is encoded by the checkpoint's passage tower (with shared towers it may have moved in training).
    state = load_checkpoint(checkpoint)["state_dict"]
    parts = assemble(cfg, progress=progress, state_dict=state)
    out_dir = run_dir_of(checkpoint)
    trainer = build_trainer(cfg, out_dir, parts.refresh, progress, log=False)
    metrics = _test(trainer, parts.module, parts.datamodule, "test")
    write_predictions(out_dir / "eval_predictions.jsonl", parts.module.predictions)
    _write_json(out_dir / "eval_metrics.json", metrics)
    return out_dir / "eval_metrics.json"
