"""What training optimises and how it runs: `model.*`, `eval.*`, `trainer.*`, `logger.*`."""

from __future__ import annotations

from dataclasses import dataclass, field

from rag_e2e.config.checks import _check, _one_of


@dataclass
class ModelConfig:
    """Loss and optimisation."""

    # The training objective, by name from rag_e2e.losses.OBJECTIVES: sequence, token (RAG marginals), emdr2, pdist,
    # loop (Atlas), lsr (REPLUG), gumbel_topk (Stochastic RAG). `token` also decodes RAG-Token; the rest RAG-Sequence.
    loss: str = "sequence"
    lm_temperature: float = 1.0  # τ of the pdist/loop targets softmax(log p(y|x,z)/τ)
    # β of lsr's LM distribution softmax(p(y|x,z)/β): a scale of likelihoods, not log-likelihoods; set it near the
    # differences of p(y|x,z) between passages (0.001 on synthetic_hard, chosen on validation: README)
    lsr_temperature: float = 0.1
    gumbel_samples: int = 4  # gumbel_topk: passage sets sampled per question
    gumbel_set_size: int = 2  # gumbel_topk: passages per sampled set (< retriever.k)
    gumbel_temperature: float = 0.5  # gumbel_topk: temperature of the relaxed top-k
    # emdr2/pdist/loop/lsr/gumbel_topk train the reader on the k passages as a mixture: uniform (its own likelihood,
    # blind to the retriever, as Atlas's reader) or retriever (weighted by the retriever, held fixed)
    reader_mix: str = "uniform"
    lr: float = 1e-3  # generator
    retriever_lr: float = 1e-4  # query encoder
    passage_lr: float | None = None  # passage encoder (retriever.train_passage_encoder); null = retriever_lr
    # end to end: the passage tower starts learning once the running train recall@k reaches this; null = at once
    passage_ready_recall: float | None = None
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear LR warm-up
    label_smoothing: float = 0.0
    reader_loss_weight: float = 0.0  # auxiliary (gold passage, question) -> answer loss on reader-only data
    reader_warmup_steps: int = 0  # at most this many steps of reader-only loss before the RAG loss starts
    reader_ready_nll: float | None = None  # ...or fewer: once the reader's running NLL (nats/answer) is below this

    def __post_init__(self) -> None:
        from rag_e2e.losses import OBJECTIVES, READER_MIXES  # the lists of choices (no second copy here)

        _one_of(self.loss, tuple(OBJECTIVES), "model.loss")
        _check(self.label_smoothing == 0 or OBJECTIVES[self.loss].label_smoothing,
               f"`model.label_smoothing` applies to the sequence/token marginals, not `model.loss={self.loss}`; "
               "set it to 0")
        _check(self.lm_temperature > 0 and self.lsr_temperature > 0 and self.gumbel_temperature > 0,
               "set `model.lm_temperature`, `model.lsr_temperature` and `model.gumbel_temperature` > 0")
        _one_of(self.reader_mix, READER_MIXES, "model.reader_mix")
        _check(self.gumbel_samples >= 1 and self.gumbel_set_size >= 1,
               "set `model.gumbel_samples` and `model.gumbel_set_size` >= 1")
        _check(self.lr > 0 and self.retriever_lr >= 0, "set `model.lr` > 0 and `model.retriever_lr` >= 0")
        _check(self.reader_loss_weight >= 0, "set `model.reader_loss_weight` >= 0")
        _check(self.passage_ready_recall is None or 0 <= self.passage_ready_recall <= 1,
               "set `model.passage_ready_recall` in [0, 1] or null")
        _check(self.reader_warmup_steps >= 0, "set `model.reader_warmup_steps` >= 0")
        # The warm-up trains the reader alone; with no reader loss its steps would have nothing to learn from.
        _check(self.reader_loss_weight > 0 or (self.reader_warmup_steps == 0 and self.reader_ready_nll is None),
               "`model.reader_warmup_steps`/`model.reader_ready_nll` warm the reader up on the reader-only loss, "
               "which `model.reader_loss_weight=0` turns off; set it > 0 or the warm-up to 0")


@dataclass
class EvalConfig:
    """Evaluation and decoding."""

    ks: list[int] = field(default_factory=lambda: [1, 5, 10])  # recall@k cut-offs; k_max docs are retrieved
    num_beams: int = 1  # 1 = greedy
    # RAG-Sequence decoding: thorough rescores every candidate on every passage; fast counts a candidate's probability
    # as 0 on passages that did not propose it (RAG paper §2.5), scoring only the proposals' own pairs
    decoding: str = "thorough"
    max_new_tokens: int = 16
    num_qualitative: int = 20  # predictions printed in the run summary
    before_training: bool = True  # also evaluate the untrained system (init/*) before training starts
    # Questions answered by the reader (EM/F1): a fixed sample of the test (and init) questions, the same for every
    # system and seed (drawn with data.split_seed); null: all. Retrieval metrics always cover every question.
    generation_questions: int | None = None
    val_generation_questions: int | None = None  # the same for validation; 0: retrieval metrics only

    def __post_init__(self) -> None:
        _one_of(self.decoding, ("thorough", "fast"), "eval.decoding")
        _check(self.num_beams >= 1, "set `eval.num_beams` >= 1")
        for key in ("generation_questions", "val_generation_questions"):
            value = getattr(self, key)
            _check(value is None or value >= 0, f"set `eval.{key}` >= 0 (or null: every question)")


@dataclass
class TrainerConfig:
    """Arguments for lightning.Trainer (subset) and run control."""

    max_steps: int = 600
    val_check_interval: int = 200  # steps between dev evaluations
    limit_val_batches: float = 1.0
    accelerator: str = "auto"
    devices: int = 1  # per node
    num_nodes: int = 1  # several nodes: launch through SLURM (hydra/launcher=slurm) or torchrun
    strategy: str = "auto"  # "ddp" for several processes (gloo on CPU); passages are then sharded across ranks
    precision: str = "32-true"
    gradient_clip_val: float | None = 1.0
    log_every_n_steps: int = 10
    seed: int = 0
    num_threads: int | None = None  # torch intra-op threads; null = torch's default
    accumulate_grad_batches: int = 1  # optimizer step every N batches (the RAG paper's effective batch: 128)
    max_time: str | None = None  # stop after this wall time, "DD:HH:MM:SS" (Lightning's format)
    # Any other lightning.Trainer keyword, checked against its signature: `+trainer.args.deterministic=true`
    # (`+`: Hydra adds a key the schema does not name). Keys rag_e2e sets itself are refused.
    args: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.accumulate_grad_batches >= 1, "set `trainer.accumulate_grad_batches` >= 1")
        if self.args:
            from rag_e2e.trainer_args import check_trainer_args

            check_trainer_args(self.args)


@dataclass
class LoggerConfig:
    """W&B (offline unless WANDB_MODE=online), CSV and TensorBoard logging; any together."""

    wandb: bool = True
    project: str = "rag_e2e"
    group: str | None = None
    csv: bool = True
    tensorboard: bool = False  # <run_dir>/tensorboard/ (needs tensorboard or tensorboardX: rag_e2e[tensorboard])

    def __post_init__(self) -> None:
        from rag_e2e.extras import missing

        _check(not self.tensorboard or len(missing("tensorboard", "tensorboardX")) < 2,  # either writer will do
               "`logger.tensorboard=true` needs the tensorboard or tensorboardX package: "
               "pip install 'rag_e2e[tensorboard]'")
