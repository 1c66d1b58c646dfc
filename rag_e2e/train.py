"""Entry points behind the CLI: assemble a run from its config, train, evaluate, write the run directory.

The config stops here: everything below receives plain typed arguments.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import OmegaConf

from rag_e2e.compose import to_yaml
from rag_e2e.config import RunConfig
from rag_e2e.data.sources import RagData, load_data
from rag_e2e.lightning.datamodule import QACollator, RagDataModule
from rag_e2e.lightning.module import RagLitModule
from rag_e2e.models.generator import build_generator
from rag_e2e.models.rag import RagModel
from rag_e2e.retrieval.encoders import BiEncoder, build_encoder_model, encode_passages, load_tokenizer
from rag_e2e.retrieval.index import build_index


@dataclass
class Assembled:
    """Everything a run needs, built from one config."""

    data: RagData
    module: RagLitModule
    datamodule: RagDataModule


def _load_prefixed(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], prefix: str) -> None:
    module.load_state_dict({key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)})


def assemble(cfg: RunConfig, base_dir: Path | None = None, progress: bool = True,
             state_dict: dict[str, torch.Tensor] | None = None) -> Assembled:
    """config -> data -> encoders -> index -> generator -> RagModel -> Lightning module and datamodule.

    `state_dict` (a RagLitModule checkpoint's) is loaded into the encoders before the corpus is encoded, so the
    index comes from the checkpoint's passage tower.
    """
    data = load_data(cfg.data, base_dir)
    enc_cfg, gen_cfg = cfg.encoder, cfg.generator
    q_tokenizer = load_tokenizer(enc_cfg.name_or_path or enc_cfg.tokenizer)
    encoder = BiEncoder(build_encoder_model(enc_cfg.name_or_path, q_tokenizer, hidden_size=enc_cfg.hidden_size,
                                            num_layers=enc_cfg.num_layers, num_heads=enc_cfg.num_heads,
                                            intermediate_size=enc_cfg.intermediate_size, seed=enc_cfg.seed),
                        pooling=enc_cfg.pooling, shared=enc_cfg.shared_towers)
    if state_dict is not None:
        _load_prefixed(encoder, state_dict, "rag.encoder.")
    p_reps = encode_passages(encoder, q_tokenizer, data.corpus, cfg.retriever.encode_batch_size,
                             enc_cfg.max_passage_length, progress=progress)
    index = build_index(cfg.index.kind, p_reps)
    generator, g_tokenizer = build_generator(gen_cfg.name_or_path, gen_cfg.tokenizer, arch=gen_cfg.arch,
                                             warm_start=gen_cfg.warm_start, d_model=gen_cfg.d_model,
                                             num_layers=gen_cfg.num_layers, num_heads=gen_cfg.num_heads,
                                             ffn_dim=gen_cfg.ffn_dim, seed=gen_cfg.seed)
    if state_dict is not None:
        _load_prefixed(generator, state_dict, "rag.generator.")
    rag = RagModel(encoder, generator, g_tokenizer, data.corpus, index, k=min(cfg.retriever.k, index.size),
                   temperature=cfg.retriever.temperature, loss=cfg.model.loss,
                   max_source_length=gen_cfg.max_source_length, max_target_length=gen_cfg.max_target_length)
    m = cfg.model
    module = RagLitModule(rag, lr=m.lr, retriever_lr=m.retriever_lr, weight_decay=m.weight_decay,
                          warmup_steps=m.warmup_steps, label_smoothing=m.label_smoothing,
                          freeze_query_encoder=cfg.retriever.freeze_query_encoder,
                          reader_loss_weight=m.reader_loss_weight, reader_warmup_steps=m.reader_warmup_steps,
                          reader_ready_nll=m.reader_ready_nll,
                          eval_ks=tuple(cfg.eval.ks), num_beams=cfg.eval.num_beams,
                          max_new_tokens=cfg.eval.max_new_tokens)
    collator = QACollator(q_tokenizer, g_tokenizer, enc_cfg.max_query_length, gen_cfg.max_target_length)
    datamodule = RagDataModule(data.train, data.dev, data.test, data.reader, collator,
                               batch_size=cfg.data.batch_size, eval_batch_size=cfg.data.eval_batch_size,
                               reader_batch_size=cfg.data.reader_batch_size, num_workers=cfg.data.num_workers,
                               use_reader=m.reader_loss_weight > 0)
    return Assembled(data, module, datamodule)


def _loggers(cfg: RunConfig, run_dir: Path) -> list[Logger]:
    loggers: list[Logger] = []
    if cfg.logger.csv:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=""))
    if cfg.logger.wandb:
        os.environ.setdefault("WANDB_MODE", "offline")  # no network unless the user goes online
        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(WandbLogger(project=cfg.logger.project, group=cfg.logger.group, name=run_dir.name,
                                   save_dir=str(run_dir), config=OmegaConf.to_container(OmegaConf.structured(cfg))))
    return loggers


def build_trainer(cfg: RunConfig, run_dir: Path, progress: bool = True, log: bool = True) -> L.Trainer:
    """The Lightning Trainer from `cfg.trainer`, with checkpointing, progress bar and (unless `log` is off) loggers."""
    t = cfg.trainer
    callbacks = [ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="step{step}", save_last=True,
                                 auto_insert_metric_name=False)]
    if progress:
        callbacks.append(RichProgressBar())
    return L.Trainer(max_steps=t.max_steps, val_check_interval=t.val_check_interval, check_val_every_n_epoch=None,
                     limit_val_batches=t.limit_val_batches, accelerator=t.accelerator, devices=t.devices,
                     precision=t.precision, gradient_clip_val=t.gradient_clip_val,
                     log_every_n_steps=t.log_every_n_steps, num_sanity_val_steps=0, callbacks=callbacks,
                     logger=(log and _loggers(cfg, run_dir)) or False, enable_progress_bar=progress,
                     enable_model_summary=False, default_root_dir=str(run_dir))


def new_run_dir(cfg: RunConfig) -> Path:
    base = Path(cfg.output_dir) / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, suffix = base, 0
    while run_dir.exists():  # two runs started in the same second
        suffix += 1
        run_dir = base.with_name(f"{base.name}.{suffix}")
    run_dir.mkdir(parents=True)
    return run_dir


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint belongs to (checkpoints live in <run>/checkpoints/)."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")  # never leave a half-written file behind
    tmp.write_text(text)
    tmp.replace(path)


def _write_json(path: Path, value) -> None:
    _atomic_write(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_predictions(path: Path, records: list[dict]) -> None:
    _atomic_write(path, "".join(json.dumps(rec) + "\n" for rec in records))


def _test(trainer: L.Trainer, module: RagLitModule, dm: RagDataModule, prefix: str) -> dict[str, float]:
    module.test_prefix = prefix
    results = trainer.test(module, datamodule=dm, verbose=False)[0]
    return {key: float(value) for key, value in results.items()}


def train(cfg: RunConfig, progress: bool = True) -> Path:
    """Run one experiment; returns the path of its metrics.json.

    The run directory holds config.yaml, metrics.json (init/* before training, test/* after), predictions.jsonl,
    predictions_init.jsonl and checkpoints/.
    """
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    run_dir = new_run_dir(cfg)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    started = time.time()
    parts = assemble(cfg, progress=progress)
    print(f"data: {parts.data.summary()}")
    trainer = build_trainer(cfg, run_dir, progress)
    metrics = _test(trainer, parts.module, parts.datamodule, "init")
    write_predictions(run_dir / "predictions_init.jsonl", parts.module.predictions)
    trainer.fit(parts.module, datamodule=parts.datamodule)
    metrics.update(_test(trainer, parts.module, parts.datamodule, "test"))
    metrics["time/total_s"] = round(time.time() - started, 1)
    metrics["train/steps"] = trainer.global_step
    metrics["train/rag_start_step"] = parts.module.rag_start_step
    write_predictions(run_dir / "predictions.jsonl", parts.module.predictions)
    _write_json(run_dir / "metrics.json", metrics)
    return run_dir / "metrics.json"


def evaluate(checkpoint: Path, cfg: RunConfig, progress: bool = True) -> Path:
    """Evaluate a checkpoint on the test split; writes eval_metrics.json and eval_predictions.jsonl beside the run."""
    L.seed_everything(cfg.trainer.seed, verbose=False)
    # The index is encoded by the checkpoint's passage tower (with shared towers it may have moved in training).
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    parts = assemble(cfg, progress=progress, state_dict=state)
    out_dir = run_dir_of(checkpoint)
    trainer = build_trainer(cfg, out_dir, progress, log=False)
    metrics = _test(trainer, parts.module, parts.datamodule, "test")
    write_predictions(out_dir / "eval_predictions.jsonl", parts.module.predictions)
    _write_json(out_dir / "eval_metrics.json", metrics)
    return out_dir / "eval_metrics.json"
