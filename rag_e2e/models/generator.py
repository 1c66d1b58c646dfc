"""Building the reader from its config: any HF seq2seq or causal LM, a packaged offline reader, or a random model;
then full fine-tuning, LoRA adapters, or frozen (memoized)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    BartConfig,
    BartForConditionalGeneration,
    EncoderDecoderModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen2ForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from rag_e2e.config import GeneratorConfig, LoraConfig
from rag_e2e.files import cache_root
from rag_e2e.models.causal_lm import CausalLMReader, PromptFormat
from rag_e2e.models.packaged import resolve_reader
from rag_e2e.models.reader import MemoizedReader, Pairs, Reader, answer_token_ll
from rag_e2e.models.reader_cache import ReaderStore, reader_fingerprint
from rag_e2e.models.seq2seq import Seq2SeqReader, eos_id, start_id
from rag_e2e.retrieval.encoders import eval_mode, load_tokenizer, resolve_name
from rag_e2e.tuning import best_of, measured_choice

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _random_model(cfg: GeneratorConfig, tokenizer: PreTrainedTokenizerBase) -> nn.Module:
    """A randomly initialised reader of `cfg.arch` on the tokenizer's vocabulary (tests, demos, ablations)."""
    vocab, pad, eos, start = len(tokenizer), tokenizer.pad_token_id, eos_id(tokenizer), start_id(tokenizer)
    d, layers, heads, ffn = cfg.d_model, cfg.num_layers, cfg.num_heads, cfg.ffn_dim
    if cfg.arch == "bart":
        return BartForConditionalGeneration(BartConfig(
            vocab_size=vocab, d_model=d, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads,
            decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, max_position_embeddings=512,
            pad_token_id=pad, bos_token_id=start, eos_token_id=eos, decoder_start_token_id=start,
            forced_eos_token_id=None))
    if cfg.arch == "t5":
        return T5ForConditionalGeneration(T5Config(
            vocab_size=vocab, d_model=d, d_kv=d // heads, d_ff=ffn, num_layers=layers, num_decoder_layers=layers,
            num_heads=heads, pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad))
    if cfg.arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=d, n_layer=layers, n_head=heads, n_inner=ffn,
                                          n_positions=1024, bos_token_id=start, eos_token_id=eos, pad_token_id=pad))
    common = dict(vocab_size=vocab, hidden_size=d, intermediate_size=ffn, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=max(heads // 2, 1), max_position_embeddings=1024,
                  bos_token_id=start, eos_token_id=eos, pad_token_id=pad, tie_word_embeddings=True)
    if cfg.arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    if cfg.arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    raise ValueError(f"random init is for arch bart, t5, gpt2, llama or qwen2; '{cfg.arch}' needs "
                     "`generator.warm_start`")


def _bert2bert(warm_start: str, tokenizer: PreTrainedTokenizerBase) -> nn.Module:
    path = resolve_name(warm_start)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path)
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id = start_id(tokenizer)
        config.pad_token_id = tokenizer.pad_token_id
        config.eos_token_id = eos_id(tokenizer)
    return model


def load_model(cfg: GeneratorConfig) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """The reader's weights and tokenizer, before any adapter or freezing."""
    if cfg.name_or_path is not None:
        path = resolve_reader(resolve_name(cfg.name_or_path), cfg.gguf_file)
        auto = AutoModelForSeq2SeqLM if AutoConfig.from_pretrained(path).is_encoder_decoder else AutoModelForCausalLM
        return auto.from_pretrained(path, dtype=_DTYPES.get(cfg.dtype, torch.float32)), load_tokenizer(path)
    if cfg.arch == "bert2bert":
        if cfg.warm_start is None:
            raise ValueError("arch 'bert2bert' needs `generator.warm_start` (e.g. minilm)")
        tokenizer = load_tokenizer(cfg.warm_start)
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            return _bert2bert(cfg.warm_start, tokenizer), tokenizer
    tokenizer = load_tokenizer(cfg.tokenizer)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        return _random_model(cfg, tokenizer).to(_DTYPES.get(cfg.dtype, torch.float32)), tokenizer


def add_lora(model: nn.Module, lora: LoraConfig) -> nn.Module:
    """Wrap `model` with peft LoRA adapters: only they train, the base weights are frozen."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    task = TaskType.SEQ_2_SEQ_LM if model.config.is_encoder_decoder else TaskType.CAUSAL_LM
    return get_peft_model(model, PeftLoraConfig(task_type=task, r=lora.r, lora_alpha=lora.alpha,
                                                lora_dropout=lora.dropout, target_modules=lora.target_modules))


def frozen_weight_names(model: nn.Module) -> set[str]:
    """State-dict names of a reader's weights that never train: none for a fully trained reader; everything but the
    adapters under LoRA, everything when frozen (tied copies and buffers included). They come from the base model
    again, so checkpoints leave them out."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    if all(p.requires_grad for p in model.parameters()):
        return set()
    return {name for name in model.state_dict() if name not in trainable}


def prompt_format(cfg: GeneratorConfig) -> PromptFormat:
    """How a causal-LM reader prompts (seq2seq readers ignore it)."""
    return PromptFormat(template=cfg.prompt_template, closed_book_template=cfg.closed_book_template,
                        chat=cfg.chat_template, answer_prefix=cfg.answer_prefix, answer_suffix=cfg.answer_suffix,
                        answer_stop=cfg.answer_stop)


def wrap_reader(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: PromptFormat) -> Reader:
    """`model` behind the `Reader` protocol of its family: seq2seq, or a causal LM prompted with `prompt`."""
    if model.config.is_encoder_decoder:
        return Seq2SeqReader(model, tokenizer)
    return CausalLMReader(model, tokenizer, prompt)


def build_reader(cfg: GeneratorConfig) -> Reader:
    """The reader `cfg` describes, behind the `Reader` protocol: seq2seq or causal LM, as its config says."""
    model, tokenizer = load_model(cfg)
    if cfg.gradient_checkpointing:
        # transformers 5.25 renamed it (the old name warns and goes in v6); 5.20-5.24 have only the old one
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
        model.config.use_cache = False
    if cfg.lora.r > 0:
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad
        model = add_lora(model, cfg.lora)
    reader = wrap_reader(model, tokenizer, prompt_format(cfg))
    if not cfg.train:
        model.requires_grad_(False)
        if cfg.dtype == "auto":
            model.to(frozen_reader_dtype(reader, cfg.max_source_length))
        store = None
        if cfg.cache_outputs:
            fingerprint = reader_fingerprint(model, tokenizer, prompt_format(cfg))
            store = ReaderStore(cache_root() / "reader_outputs" / f"{fingerprint[:20]}.sqlite", fingerprint)
        return MemoizedReader(reader, store)
    return reader


def frozen_reader_dtype(reader: Reader, max_source_length: int) -> torch.dtype:
    """The faster of float32 and bfloat16 for a frozen reader here: bfloat16 on a GPU that has it; on a CPU, by
    timing both on a probe (scoring 4 rows of `max_source_length` tokens, generating 8 tokens for 4), once per host
    and model (rag_e2e/tuning.py). CPUs with bf16 units (AVX-512 BF16, AMX) run it ~2-3x faster; others slower."""
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    model = reader.model
    n_params = sum(p.numel() for p in model.parameters())
    key = f"{type(model).__name__} {n_params / 1e6:.0f}M params, {max_source_length}-token rows"
    words = " ".join(["the passage says what the answer is"] * max_source_length)
    pairs = Pairs(["A title"] * 4, [words] * 4, ["What does the passage say?"] * 4)
    labels = reader.answer_labels(["what the answer is, in a few words of text"] * 4, 16)

    def probe():
        with torch.no_grad(), eval_mode(model):
            answer_token_ll(reader, pairs, labels, max_source_length)
            reader.generate(pairs, max_source_length, max_new_tokens=8)

    def measure() -> dict[str, float]:
        seconds = {}
        for name in ("float32", "bfloat16"):
            model.to(_DTYPES[name])
            seconds[name] = best_of({name: probe})[name]
        return seconds

    return _DTYPES[measured_choice("reader_dtype", key, measure)]
