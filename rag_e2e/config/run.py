"""One run's whole config: every group, and the checks across groups."""

from __future__ import annotations

from dataclasses import dataclass, field

from rag_e2e.config.checks import MAX_K, _check
from rag_e2e.config.data import DataConfig
from rag_e2e.config.models import EncoderConfig, GeneratorConfig
from rag_e2e.config.retrieval import IndexConfig, RefreshConfig, RetrieverConfig
from rag_e2e.config.training import EvalConfig, LoggerConfig, ModelConfig, TrainerConfig


@dataclass
class RunConfig:
    """Everything one `rag-e2e train` run needs."""

    name: str = "default"
    output_dir: str = "runs"  # runs go to <output_dir>/<name>-<timestamp>, sweeps to <output_dir>/sweeps/ (hydra.*.dir)
    run_dir: str | None = None  # or exactly this directory; a run found there is resumed from its last checkpoint
    optimized_metric: str | None = None  # what a run returns to a Hydra sweeper (Optuna), e.g. test/em
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    refresh: RefreshConfig = field(default_factory=RefreshConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)

    def __post_init__(self) -> None:
        _check(all(1 <= k <= MAX_K for k in self.eval.ks), f"set every `eval.ks` entry in [1, {MAX_K}]")
        from rag_e2e.losses import OBJECTIVES

        reads = 1 if self.retriever.closed_book or self.retriever.read_gold else self.retriever.k
        need = OBJECTIVES[self.model.loss].min_docs
        _check(reads >= need, f"`model.loss={self.model.loss}` needs at least {need} passages per question; set "
               f"`retriever.k` >= {need} (closed_book/read_gold read one)")
        _check(self.model.loss != "gumbel_topk" or self.model.gumbel_set_size < reads,
               "set `model.gumbel_set_size` below `retriever.k`: a set of all k passages is not a sample")
        _check(not (self.retriever.train_passage_encoder and self.refresh.mode == "off"),
               "`retriever.train_passage_encoder` trains the passage tower, but `refresh=off` never re-encodes the "
               "index it searches; set `refresh=sync` or `refresh=async` (or `refresh=stale` for the no-refresh "
               "ablation)")
        reader_trains = self.generator.train and self.model.lr > 0
        retriever_trains = not self.retriever.query_frozen
        _check(reader_trains or retriever_trains or self.trainer.max_steps == 0,
               "nothing trains: the reader is frozen (`generator.train=false`) and so is the retriever; "
               "set `trainer.max_steps=0` to evaluate only")
        _check(self.generator.train or self.model.reader_loss_weight == 0,
               "`model.reader_loss_weight` trains the reader, which `generator.train=false` freezes; set it to 0")


# ---------------------------------------------------------------------------------------------------------------------
# rag-e2e prepare: raw documents -> a passage corpus (rag_e2e/prepare/). Not part of RunConfig: its own command.
