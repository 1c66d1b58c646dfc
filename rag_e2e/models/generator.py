"""The seq2seq reader: building it, and turning (passage, question) pairs and answers into its tensors."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from transformers import (
    AutoModelForSeq2SeqLM,
    BartConfig,
    BartForConditionalGeneration,
    EncoderDecoderModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
)

from rag_e2e.retrieval.encoders import load_tokenizer, resolve_name

Arch = Literal["bart", "t5", "bert2bert"]


def eos_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """End-of-answer token: eos where the tokenizer has one, else [SEP] (WordPiece vocabularies)."""
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id


def _start_id(tokenizer: PreTrainedTokenizerBase) -> int:
    for tok_id in (tokenizer.bos_token_id, tokenizer.cls_token_id, tokenizer.pad_token_id):
        if tok_id is not None:
            return tok_id
    raise ValueError("tokenizer has no bos, cls or pad token to start decoding from")


def _random_seq2seq(arch: Arch, tokenizer: PreTrainedTokenizerBase, d_model: int, num_layers: int, num_heads: int,
                    ffn_dim: int, max_positions: int) -> nn.Module:
    pad, eos, start = tokenizer.pad_token_id, eos_id(tokenizer), _start_id(tokenizer)
    if arch == "bart":
        config = BartConfig(vocab_size=len(tokenizer), d_model=d_model, encoder_layers=num_layers,
                            decoder_layers=num_layers, encoder_attention_heads=num_heads,
                            decoder_attention_heads=num_heads, encoder_ffn_dim=ffn_dim, decoder_ffn_dim=ffn_dim,
                            max_position_embeddings=max_positions, pad_token_id=pad, bos_token_id=start,
                            eos_token_id=eos, decoder_start_token_id=start, forced_eos_token_id=None)
        return BartForConditionalGeneration(config)
    if arch == "t5":
        config = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=d_model // num_heads, d_ff=ffn_dim,
                          num_layers=num_layers, num_decoder_layers=num_layers, num_heads=num_heads,
                          pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad)
        return T5ForConditionalGeneration(config)
    raise ValueError(f"random init is for arch 'bart' or 't5'; arch '{arch}' needs `generator.warm_start`")


def build_generator(name_or_path: str | None, tokenizer_name: str, *, arch: Arch = "bart",
                    warm_start: str | None = None, d_model: int = 128, num_layers: int = 2, num_heads: int = 2,
                    ffn_dim: int = 256, max_positions: int = 512, seed: int = 0
                    ) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """A pretrained seq2seq model, a BERT2BERT warm start, or a random BART/T5 on `tokenizer_name`'s vocab."""
    if name_or_path is not None:
        path = resolve_name(name_or_path)
        return AutoModelForSeq2SeqLM.from_pretrained(path), load_tokenizer(path)
    tokenizer = load_tokenizer(warm_start if arch == "bert2bert" and warm_start else tokenizer_name)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if arch == "bert2bert":
            if warm_start is None:
                raise ValueError("arch 'bert2bert' needs `generator.warm_start` (e.g. minilm)")
            path = resolve_name(warm_start)
            model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path)
            model.config.decoder_start_token_id = _start_id(tokenizer)
            model.config.pad_token_id = tokenizer.pad_token_id
            model.config.eos_token_id = eos_id(tokenizer)
            model.generation_config.decoder_start_token_id = _start_id(tokenizer)
            model.generation_config.pad_token_id = tokenizer.pad_token_id
            model.generation_config.eos_token_id = eos_id(tokenizer)
        else:
            model = _random_seq2seq(arch, tokenizer, d_model, num_layers, num_heads, ffn_dim, max_positions)
    return model, tokenizer


def decoder_start_id(generator: nn.Module) -> int:
    """The token the decoder starts from, as the model's config says."""
    start = generator.config.decoder_start_token_id
    if start is None:
        raise ValueError("generator config has no decoder_start_token_id")
    return start


def shift_right(labels: torch.Tensor, start_id: int, pad_id: int) -> torch.Tensor:
    """(N, T) labels -> (N, T) decoder inputs: [start, y_1, ..., y_{T-1}], with ignored (-100) positions as pad."""
    shifted = labels.new_full(labels.shape, pad_id)
    shifted[:, 0] = start_id
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == -100, pad_id)


def encode_answers(tokenizer: PreTrainedTokenizerBase, answers: list[str], max_length: int) -> torch.Tensor:
    """Answers -> (B, T) labels: answer tokens then eos, padded with -100 (ignored by the losses)."""
    end = eos_id(tokenizer)
    seqs = [ids[: max_length - 1] + [end] for ids in tokenizer(answers, add_special_tokens=False)["input_ids"]]
    labels = torch.full((len(seqs), max(map(len, seqs))), -100, dtype=torch.long)
    for i, ids in enumerate(seqs):
        labels[i, : len(ids)] = torch.tensor(ids)
    return labels


def encode_sources(tokenizer: PreTrainedTokenizerBase, titles: list[str], texts: list[str], questions: list[str],
                   max_length: int) -> dict[str, torch.Tensor]:
    """Reader inputs "title / passage // question", truncating the passage, never the question.

    The question goes in as the second segment of a pair with `only_first` truncation, so a long passage cannot
    push it out of the window (HF's RAG truncates the joined string from the right, question included).
    """
    first = [f"{title} / {text}" for title, text in zip(titles, texts)]
    second = [f"// {q}" for q in questions]
    enc = tokenizer(first, second, truncation="only_first", max_length=max_length, padding=True,
                    return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def decode_answers(tokenizer: PreTrainedTokenizerBase, token_ids: torch.Tensor) -> list[str]:
    """(N, T) generated ids -> answer strings, special tokens removed."""
    return [s.strip() for s in tokenizer.batch_decode(token_ids, skip_special_tokens=True)]
