"""The seq2seq reader (BART, T5, BERT2BERT): "title / passage // question" in the encoder, the answer decoded."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rag_e2e.models.reader import Pairs, decode_answers, pad_labels


def eos_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """End-of-answer token: eos where the tokenizer has one, else [SEP] (WordPiece vocabularies)."""
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id


def start_id(tokenizer: PreTrainedTokenizerBase) -> int:
    for tok_id in (tokenizer.bos_token_id, tokenizer.cls_token_id, tokenizer.pad_token_id):
        if tok_id is not None:
            return tok_id
    raise ValueError("tokenizer has no bos, cls or pad token to start decoding from")


def decoder_start_id(generator: nn.Module) -> int:
    """The token the decoder starts from, as the model's config says."""
    start = generator.config.decoder_start_token_id
    if start is None:
        raise ValueError("generator config has no decoder_start_token_id")
    return start


def shift_right(labels: torch.Tensor, start: int, pad_id: int) -> torch.Tensor:
    """(N, T) labels -> (N, T) decoder inputs: [start, y_1, ..., y_{T-1}], with ignored (-100) positions as pad."""
    shifted = labels.new_full(labels.shape, pad_id)
    shifted[:, 0] = start
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == -100, pad_id)


def encode_answers(tokenizer: PreTrainedTokenizerBase, answers: Sequence[str], max_length: int) -> torch.Tensor:
    """Answers -> (B, T) labels: answer tokens then eos, padded with -100 (ignored by the losses)."""
    end = eos_id(tokenizer)
    ids = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
    return pad_labels([seq[: max_length - 1] + [end] for seq in ids])


def encode_sources(tokenizer: PreTrainedTokenizerBase, titles: Sequence[str], texts: Sequence[str],
                   questions: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """Reader inputs "title / passage // question", truncating the passage, never the question.

    The question goes in as the second segment of a pair with `only_first` truncation, so a long passage cannot
    push it out of the window (HF's RAG truncates the joined string from the right, question included).
    """
    first = [f"{title} / {text}" for title, text in zip(titles, texts)]
    second = [f"// {q}" for q in questions]
    enc = tokenizer(first, second, truncation="only_first", max_length=max_length, padding=True,
                    return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


class _Seq2SeqSteps:
    """Decoding steps with the encoder run once and the decoder's KV cache reused."""

    def __init__(self, model: nn.Module, src: dict[str, torch.Tensor]):
        self.model, self.mask = model, src["attention_mask"]
        self.encoder_outputs = model.get_encoder()(**src)
        self.start = decoder_start_id(model)
        self.past = None

    def step(self, tokens: torch.Tensor | None) -> torch.Tensor:
        if tokens is None:
            tokens = self.mask.new_full((self.mask.shape[0],), self.start)
        out = self.model(encoder_outputs=self.encoder_outputs, attention_mask=self.mask,
                         decoder_input_ids=tokens.unsqueeze(1), cache=self.past, use_cache=True)
        self.past = out.cache
        return torch.log_softmax(out.logits[:, -1].float(), -1)  # (N, V)

    def reorder(self, rows: torch.Tensor) -> None:
        """Continue row i from row rows[i] (beam search): the encoder states, mask and KV cache follow."""
        states = self.encoder_outputs.last_hidden_state.index_select(0, rows)
        self.encoder_outputs = type(self.encoder_outputs)(last_hidden_state=states)
        self.mask = self.mask.index_select(0, rows)
        self.past.reorder_cache(rows)


class Seq2SeqReader:
    """An encoder-decoder reader: the pair is the encoder's input, the answer the decoder's target."""

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase):
        self.model, self.tokenizer = model, tokenizer
        self.stop_ids, self.pad_id = (eos_id(tokenizer),), tokenizer.pad_token_id

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def sources(self, pairs: Pairs, max_source_length: int) -> dict[str, torch.Tensor]:
        enc = encode_sources(self.tokenizer, pairs.titles, pairs.texts, pairs.questions, max_source_length)
        return {name: t.to(self._device()) for name, t in enc.items()}

    def answer_labels(self, answers: Sequence[str], max_length: int) -> torch.Tensor:
        return encode_answers(self.tokenizer, answers, max_length)

    def answer_logits(self, pairs: Pairs, labels: torch.Tensor, max_source_length: int) -> torch.Tensor:
        src = self.sources(pairs, max_source_length)
        labels = labels.to(self._device())
        dec_in = shift_right(labels, decoder_start_id(self.model), self.pad_id)
        return self.model(**src, decoder_input_ids=dec_in).logits  # (N, T, V)

    def generate(self, pairs: Pairs, max_source_length: int, *, num_beams: int = 1,
                 max_new_tokens: int = 16, num_return: int = 1) -> list[str]:
        out = self.model.generate(**self.sources(pairs, max_source_length), num_beams=num_beams,
                                  num_return_sequences=num_return, max_new_tokens=max_new_tokens, do_sample=False)
        return decode_answers(self.tokenizer, out)  # the decoder's output is the answer alone

    def start_decoding(self, pairs: Pairs, max_source_length: int) -> _Seq2SeqSteps:
        return _Seq2SeqSteps(self.model, self.sources(pairs, max_source_length))

    def decode(self, token_ids: torch.Tensor) -> list[str]:
        return decode_answers(self.tokenizer, token_ids)
