"""The reader interface: what RAG training and decoding ask of a generator, whatever its architecture.

A reader reads (passage, question) pairs, one row each, and scores or generates answers for them. `RagModel`, the
losses and decoding use only this protocol; each architecture family (seq2seq, causal LM) is one class behind it.

Answer labels are (N, T) token ids ending in the reader's end-of-answer token, padded with -100. Every per-token
output is aligned with them: position t is the reader's prediction of ``labels[:, t]`` given the pair and
``labels[:, :t]``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rag_e2e.models.reader_cache import ReaderStore, decode_ll, encode_ll
from rag_e2e.retrieval.encoders import eval_mode

IGNORE = -100


@dataclass(frozen=True)
class Pairs:
    """N (passage, question) rows for a reader. An empty title and text means no passage (closed book)."""

    titles: Sequence[str]
    texts: Sequence[str]
    questions: Sequence[str]

    def __post_init__(self) -> None:
        if not len(self.titles) == len(self.texts) == len(self.questions):
            raise ValueError(f"Pairs needs as many titles ({len(self.titles)}), texts ({len(self.texts)}) and "
                             f"questions ({len(self.questions)})")

    def __len__(self) -> int:
        return len(self.questions)

    def select(self, rows: Sequence[int]) -> Pairs:
        return Pairs([self.titles[r] for r in rows], [self.texts[r] for r in rows], [self.questions[r] for r in rows])


class StepDecoder(Protocol):
    """Incremental decoding over N rows with the reader's KV cache: feed one token per row, get the next
    token's log-probabilities (N, V). The first call takes None (nothing decoded yet)."""

    def step(self, tokens: torch.Tensor | None) -> torch.Tensor: ...

    def reorder(self, rows: torch.Tensor) -> None:
        """Row i continues from what row rows[i] has decoded (beam search; the row count may change)."""
        ...


@runtime_checkable
class Reader(Protocol):
    """A generator as RAG sees it."""

    model: nn.Module  # the weights (plain or PEFT-wrapped); RagModel registers it as `generator`
    tokenizer: PreTrainedTokenizerBase
    stop_ids: tuple[int, ...]  # tokens that end a generated answer
    pad_id: int

    def answer_labels(self, answers: Sequence[str], max_length: int) -> torch.Tensor:
        """Answers -> (N, T) labels: answer tokens, then `end_id`, padded with -100."""
        ...

    def answer_logits(self, pairs: Pairs, labels: torch.Tensor, max_source_length: int) -> torch.Tensor:
        """(N, T, V) logits over the vocabulary at each answer position, teacher-forced on `labels`."""
        ...

    def generate(self, pairs: Pairs, max_source_length: int, *, num_beams: int = 1,
                 max_new_tokens: int = 16, num_return: int = 1) -> list[str]:
        """`num_return` (≤ num_beams) answer strings per row, row-major, best first: the answer only, never the
        prompt."""
        ...

    def start_decoding(self, pairs: Pairs, max_source_length: int) -> StepDecoder:
        """A step decoder over the rows (RAG-Token decoding marginalizes its outputs over passages)."""
        ...

    def decode(self, token_ids: torch.Tensor) -> list[str]:
        """(N, T) generated answer ids -> answer strings."""
        ...


def softmax_precision(logits: torch.Tensor) -> torch.Tensor:
    """Logits in at least fp32 for a log-softmax (bf16/fp16 logits lose the tail); float64 stays float64."""
    return logits if logits.dtype == torch.float64 else logits.float()


def answer_token_ll(reader: Reader, pairs: Pairs, labels: torch.Tensor, max_source_length: int) -> torch.Tensor:
    """(N, T) log p(y_t | pair, y_<t) of each label token; 0 at ignored positions."""
    logits = reader.answer_logits(pairs, labels, max_source_length)  # (N, T, V)
    keep = labels.ne(IGNORE)
    logits = softmax_precision(logits)
    logp = torch.log_softmax(logits, -1).gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return logp.masked_fill(~keep, 0.0)


def pad_labels(seqs: list[list[int]]) -> torch.Tensor:
    """Token-id lists -> (N, T) right-padded with -100."""
    labels = torch.full((len(seqs), max(map(len, seqs), default=1)), IGNORE, dtype=torch.long)
    for i, ids in enumerate(seqs):
        labels[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return labels


def decode_answers(tokenizer: PreTrainedTokenizerBase, token_ids: torch.Tensor, stop: str | None = None) -> list[str]:
    """(N, T) generated ids -> answer strings: special tokens removed, cut at `stop` (e.g. a newline)."""
    texts = tokenizer.batch_decode(token_ids, skip_special_tokens=True)
    if stop:
        texts = [t.lstrip().split(stop, 1)[0] for t in texts]
    return [t.strip() for t in texts]


def _unseen(keys: list[tuple], memo: dict) -> list[int]:
    """Indices of the first occurrence of each key not in `memo`."""
    first = {}
    for i, key in enumerate(keys):
        if key not in memo:
            first.setdefault(key, i)
    return list(first.values())


class MemoizedReader:
    """A frozen reader whose outputs are cached: its answer log-likelihood for a (passage, question, answer) never
    changes, so after the first pass retriever training and decoding only pay for pairs they have not seen.

    Outputs are kept in memory, and with a `store` also on disk, shared by every run and process that reads with the
    same reader (rag_e2e/models/reader_cache.py). Runs the wrapped reader without dropout and without gradient; a
    trainable reader must not be wrapped.
    """

    def __init__(self, reader: Reader, store: ReaderStore | None = None):
        self.inner, self.store = reader, store
        self.model, self.tokenizer = reader.model, reader.tokenizer
        self.stop_ids, self.pad_id = reader.stop_ids, reader.pad_id
        self._ll: dict[tuple, torch.Tensor] = {}
        self._answers: dict[tuple, list[str]] = {}
        self.hits = self.misses = 0  # rows found (in memory or on disk) / computed, scoring and generation

    def answer_labels(self, answers: Sequence[str], max_length: int) -> torch.Tensor:
        return self.inner.answer_labels(answers, max_length)

    def answer_logits(self, pairs: Pairs, labels: torch.Tensor, max_source_length: int) -> torch.Tensor:
        with torch.no_grad(), eval_mode(self.model):
            return self.inner.answer_logits(pairs, labels, max_source_length)

    def _lookup(self, table: str, keys: list[tuple], memo: dict, decode) -> list[int]:
        """Fill `memo` from the store for keys it lacks; the indices of the first occurrence of each key still
        missing (to compute)."""
        todo = _unseen(keys, memo)
        if todo and self.store is not None:
            names = {self.store.key(keys[i]): keys[i] for i in todo}
            for name, blob in self.store.get(table, list(names)).items():
                memo[names[name]] = decode(blob)
            todo = _unseen(keys, memo)
        self.hits += len(keys) - len(todo)  # a row repeated within the call counts as a hit
        self.misses += len(todo)
        return todo

    def _save(self, table: str, keys: list[tuple], encode) -> None:
        if self.store is not None:
            self.store.put(table, {self.store.key(key): encode(key) for key in keys})

    def answer_token_ll(self, pairs: Pairs, labels: torch.Tensor, max_source_length: int) -> torch.Tensor:
        """As `answer_token_ll(reader, ...)`, computing only the rows not seen before."""
        keys = [(pairs.titles[i], pairs.texts[i], pairs.questions[i], max_source_length,
                 tuple(labels[i][labels[i] != IGNORE].tolist())) for i in range(len(pairs))]
        todo = self._lookup("ll", keys, self._ll, decode_ll)
        if todo:
            sub = labels[todo]
            sub = sub[:, : int(sub.ne(IGNORE).sum(1).max())]
            with torch.no_grad(), eval_mode(self.model):
                fresh = answer_token_ll(self.inner, pairs.select(todo), sub, max_source_length).cpu()
            for j, i in enumerate(todo):
                self._ll[keys[i]] = fresh[j, : len(keys[i][-1])].float()
            self._save("ll", [keys[i] for i in todo], lambda key: encode_ll(self._ll[key]))
        out = torch.zeros(labels.shape, dtype=torch.float32)
        for i, key in enumerate(keys):
            out[i, : len(key[-1])] = self._ll[key]
        return out.to(labels.device)

    def generate(self, pairs: Pairs, max_source_length: int, *, num_beams: int = 1,
                 max_new_tokens: int = 16, num_return: int = 1) -> list[str]:
        keys = [(pairs.titles[i], pairs.texts[i], pairs.questions[i], max_source_length, num_beams, max_new_tokens,
                 num_return) for i in range(len(pairs))]
        todo = self._lookup("gen", keys, self._answers, lambda blob: json.loads(blob))
        if todo:
            with torch.no_grad(), eval_mode(self.model):
                fresh = self.inner.generate(pairs.select(todo), max_source_length, num_beams=num_beams,
                                            max_new_tokens=max_new_tokens, num_return=num_return)
            for j, i in enumerate(todo):
                self._answers[keys[i]] = fresh[j * num_return : (j + 1) * num_return]
            self._save("gen", [keys[i] for i in todo], lambda key: json.dumps(self._answers[key]).encode())
        return [answer for key in keys for answer in self._answers[key]]

    def start_decoding(self, pairs: Pairs, max_source_length: int) -> StepDecoder:
        return self.inner.start_decoding(pairs, max_source_length)

    def decode(self, token_ids: torch.Tensor) -> list[str]:
        return self.inner.decode(token_ids)


def token_ll(reader: Reader | MemoizedReader, pairs: Pairs, labels: torch.Tensor,
             max_source_length: int) -> torch.Tensor:
    """(N, T) per-token answer log-likelihoods, from the memo where the reader is memoized."""
    if isinstance(reader, MemoizedReader):
        return reader.answer_token_ll(pairs, labels, max_source_length)
    return answer_token_ll(reader, pairs, labels, max_source_length)
