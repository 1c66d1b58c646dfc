"""`rag-e2e export <run dir> <out dir>`: a finished (or interrupted) training run -> a self-contained pipeline folder.

The checkpoint holds the full model whatever the training world size, and the index is one index over the whole
corpus, current with the checkpoint's passage tower: the run's saved vectors when that tower encoded them (its N
per-rank shards joined; `saved_vectors.py`), else encoded again here, in one process.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rag_e2e.compose import load_run_config
from rag_e2e.config import RunConfig
from rag_e2e.data.sources import load_corpus_of
from rag_e2e.errors import ConfigError
from rag_e2e.inference.pipeline import PipelineSettings, RagPipeline
from rag_e2e.inference.saved_vectors import saved_vectors
from rag_e2e.lightning.checkpoint_io import load_checkpoint
from rag_e2e.models.generator import prompt_format
from rag_e2e.retrieval.index import build_index, state_fingerprint
from rag_e2e.retrieval.refresh import IndexBuilder
from rag_e2e.train import build_encoder, build_trained_reader, index_params


def settings_of(cfg: RunConfig) -> PipelineSettings:
    """The inference settings a training run evaluated with."""
    r, e, g, enc = cfg.retriever, cfg.eval, cfg.generator, cfg.encoder
    return PipelineSettings(
        k=1 if r.closed_book else r.k, temperature=r.temperature,
        marginal="token" if cfg.model.loss == "token" else "sequence", decoding=e.decoding, num_beams=e.num_beams,
        max_new_tokens=e.max_new_tokens, max_query_length=enc.max_query_length,
        max_passage_length=enc.max_passage_length, max_source_length=g.max_source_length,
        max_target_length=g.max_target_length, rerank_candidates=r.rerank_candidates, closed_book=r.closed_book,
        pooling=enc.pooling, shared_towers=enc.shared_towers, prompt=dataclasses.asdict(prompt_format(g)),
        encode_batch_size=r.encode_batch_size)


def pipeline_from_run(run_dir: str | Path, checkpoint: str | Path | None = None, overrides: list[str] | None = None,
                      base_dir: Path | None = None, progress: bool = False) -> RagPipeline:
    """The pipeline of a run directory: its config, the checkpoint's weights (default checkpoints/last.ckpt) and an
    index over its corpus encoded now by the checkpoint's passage tower.

    Raises:
        ConfigError: no config.yaml or checkpoint, or a run that is not a deployable system (`read_gold`).
    """
    run_dir = Path(run_dir)
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"{config_file}: not found; export reads the run's config from its run directory")
    cfg = load_run_config(config_file, overrides)
    if cfg.retriever.read_gold:
        raise ConfigError(f"{config_file}: `retriever.read_gold` reads each question's gold passage, an oracle with "
                          "no retrieval to deploy; export a run that retrieves")
    checkpoint = Path(checkpoint) if checkpoint else run_dir / "checkpoints" / "last.ckpt"
    return pipeline_from_config(cfg, load_checkpoint(checkpoint)["state_dict"], base_dir, progress,
                                saved_index_dir=run_dir / "index")


def pipeline_from_config(cfg: RunConfig, state_dict: dict | None = None, base_dir: Path | None = None,
                         progress: bool = False, saved_index_dir: Path | None = None) -> RagPipeline:
    """The pipeline `cfg` describes, with a RagLitModule checkpoint's weights (`state_dict`; None: as initialised),
    and an index over the corpus by its passage tower: the vectors saved in `saved_index_dir` where that tower
    encoded them, else encoded now, in this process."""
    encoder, tokenizer = build_encoder(cfg, state_dict)
    reader = build_trained_reader(cfg, state_dict)
    corpus, _ = load_corpus_of(cfg.data, base_dir)
    builder = IndexBuilder(corpus, tokenizer, cfg.encoder.max_passage_length, cfg.retriever.encode_batch_size,
                           kind=cfg.index.kind, index_params=index_params(cfg))
    saved = None
    if saved_index_dir is not None and saved_index_dir.is_dir():
        saved = saved_vectors(saved_index_dir, corpus_fingerprint=builder.corpus_fingerprint,
                              encoder_fingerprint=state_fingerprint(encoder.passage_model), size=len(corpus))
    if saved is not None:
        vectors, version = saved
        print(f"export: the run's saved vectors ({saved_index_dir.name}/{version}), encoded by this checkpoint's "
              "passage tower: not encoding the corpus again")
        index = build_index(cfg.index.kind, vectors, **index_params(cfg))
    else:
        index, _ = builder.build(encoder, progress=progress)
    return RagPipeline(encoder, tokenizer, reader, corpus, index, settings_of(cfg))


def export_run(run_dir: str | Path, out_dir: str | Path, *, checkpoint: str | Path | None = None,
               lora: str = "merged", overrides: list[str] | None = None, base_dir: Path | None = None,
               progress: bool = False) -> Path:
    """Write the pipeline folder of `run_dir` to `out_dir` (see `RagPipeline.save_pretrained`), with the run's
    config.yaml and metrics.json beside it. `overrides` (`a.b=value`) change the run's config first, e.g.
    `index.kind=ivf_pq` for a compressed index or `data.corpus_path=...` where the data moved."""
    run_dir = Path(run_dir)
    pipeline = pipeline_from_run(run_dir, checkpoint, overrides, base_dir, progress)
    extra = {name: run_dir / name for name in ("config.yaml", "metrics.json") if (run_dir / name).is_file()}
    return pipeline.save_pretrained(out_dir, lora=lora, extra_files=extra)
