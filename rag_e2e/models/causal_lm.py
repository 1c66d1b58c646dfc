"""The decoder-only reader: a prompt built from (passage, question), the answer scored or generated after it.

Sequences are laid out as ``[left pad][prompt][answer][right pad]``: every prompt ends at the same column L, so the
logits that predict the answer are the same T columns for every row (``logits_to_keep``; the LM head runs on
nothing else), and generation starts from one column. Position ids come from the attention mask, so padding never
shifts a token's position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rag_e2e.models.reader import IGNORE, Pairs, decode_answers, pad_labels

_SLOT = "\u0000PASSAGE\u0000"  # stands in for the passage text while the template (and chat template) render


@dataclass(frozen=True)
class PromptFormat:
    """How a (passage, question) pair becomes a prompt, and how an answer follows it."""

    template: str = "Title: {title}\nPassage: {text}\nQuestion: {question}\nAnswer:"
    closed_book_template: str = "Question: {question}\nAnswer:"  # used where a row has no passage
    chat: bool = True  # wrap the prompt as a user turn in the tokenizer's chat template, where it has one
    answer_prefix: str = " "  # text before the answer (plain prompts; a chat answer starts the assistant turn)
    answer_suffix: str | None = None  # text that ends an answer; None: the tokenizer's eos token
    answer_stop: str | None = "\n"  # generated text is cut here


def _leading_specials(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The special tokens the tokenizer puts before a text ([bos] for Llama/Gemma, [CLS] for BERT, none for GPT-2)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    return full[: full.index(plain[0])] if plain and plain[0] in full else []


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def _contiguous_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:])


class _CausalSteps:
    """Decoding steps: the prompt is prefilled once and its KV cache extended by one token per step."""

    def __init__(self, model: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor):
        self.model, self.ids, self.mask = model, input_ids, mask
        self.past = None

    def step(self, tokens: torch.Tensor | None) -> torch.Tensor:
        if tokens is None:
            ids, mask = self.ids, self.mask
        else:
            ids, mask = tokens.unsqueeze(1), torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], 1)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)[:, -ids.shape[1]:]
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=self.past,
                         use_cache=True, logits_to_keep=1)
        self.past, self.mask = out.cache, mask
        return torch.log_softmax(out.logits[:, -1].float(), -1)  # (N, V)

    def reorder(self, rows: torch.Tensor) -> None:
        """Continue row i from row rows[i] (beam search): the mask and KV cache follow."""
        self.mask = self.mask.index_select(0, rows)
        self.past.reorder_cache(rows)


class CausalLMReader:
    """A decoder-only LM reader (GPT-2, Llama, Qwen2, Gemma, SmolLM, ...) behind the `Reader` protocol."""

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: PromptFormat | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.prompt = prompt or PromptFormat()
        self.chat = self.prompt.chat and bool(getattr(tokenizer, "chat_template", None))
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        if eos is None:
            raise ValueError("the reader's tokenizer has no eos (or sep) token to end answers with")
        self.suffix = _ids(tokenizer, self.prompt.answer_suffix) if self.prompt.answer_suffix else [eos]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        stop = _ids(tokenizer, self.prompt.answer_stop or "")
        self.stop_ids = tuple(dict.fromkeys([eos, self.suffix[-1], *(stop if len(stop) == 1 else [])]))
        self._lead = [] if self.chat else _leading_specials(tokenizer)
        head = model.get_output_embeddings()
        # HF slices the hidden states (logits_to_keep) before the LM head: a strided input, on which a CPU bf16
        # matmul runs ~25x slower than on a contiguous copy (torch 2.13, 262k-token head).
        if head is not None and not getattr(head, "_contiguous_hook", False):
            head.register_forward_pre_hook(_contiguous_input)
            head._contiguous_hook = True

    # ---- prompts ------------------------------------------------------------------------------------------------
    def _render(self, title: str, question: str, closed: bool) -> tuple[str, str]:
        """The prompt text around the passage slot: (before, after); `after` is the whole prompt when closed."""
        fmt = self.prompt
        text = fmt.closed_book_template.format(question=question) if closed else \
            fmt.template.format(title=title, text=_SLOT, question=question)
        if self.chat:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                      add_generation_prompt=True)
        before, _, after = text.partition(_SLOT)
        return ("", before) if closed else (before, after)

    def prompt_ids(self, title: str, text: str, question: str, max_length: int) -> list[int]:
        """Token ids of one prompt, at most `max_length` long where the template allows: the passage is truncated,
        never the question."""
        closed = not title and not text
        before, after = self._render(title, question, closed)
        # Keep the space before the passage with the passage, as the tokenizer would have seen it in one string.
        stripped = before.rstrip(" ")
        text = before[len(stripped):] + text
        head, tail = self._lead + _ids(self.tokenizer, stripped), _ids(self.tokenizer, after)
        if closed:
            return head + tail
        budget = max(max_length - len(head) - len(tail), 0)
        return head + _ids(self.tokenizer, text)[:budget] + tail

    def _prompts(self, pairs: Pairs, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, L) left-padded prompt ids and attention mask, on the model's device."""
        seqs = [self.prompt_ids(t, x, q, max_length) for t, x, q in zip(pairs.titles, pairs.texts, pairs.questions)]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, seq in enumerate(seqs):
            ids[i, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[i, width - len(seq):] = 1
        device = next(self.model.parameters()).device
        return ids.to(device), mask.to(device)

    # ---- the Reader protocol ------------------------------------------------------------------------------------
    def answer_labels(self, answers: Sequence[str], max_length: int) -> torch.Tensor:
        prefix = "" if self.chat else self.prompt.answer_prefix
        seqs = [_ids(self.tokenizer, prefix + a)[: max_length - len(self.suffix)] + self.suffix for a in answers]
        return pad_labels(seqs)

    def sequences(self, pairs: Pairs, labels: torch.Tensor, max_source_length: int) -> dict[str, torch.Tensor]:
        """Model inputs (N, L+T) for teacher-forced scoring: left-padded prompts, then the right-padded answers."""
        prompt, prompt_mask = self._prompts(pairs, max_source_length)  # (N, L)
        labels = labels.to(prompt.device)
        ids = torch.cat([prompt, labels.masked_fill(labels.eq(IGNORE), self.pad_id)], 1)  # (N, L+T)
        mask = torch.cat([prompt_mask, labels.ne(IGNORE).long()], 1)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp_min(0)}

    def answer_logits(self, pairs: Pairs, labels: torch.Tensor, max_source_length: int) -> torch.Tensor:
        inputs = self.sequences(pairs, labels, max_source_length)
        # Columns L-1 .. L+T-2 predict answer tokens 0 .. T-1; the LM head runs on those T columns only.
        logits = self.model(**inputs, logits_to_keep=labels.shape[1] + 1).logits
        return logits[:, :-1]  # (N, T, V)

    def generate(self, pairs: Pairs, max_source_length: int, *, num_beams: int = 1,
                 max_new_tokens: int = 16, num_return: int = 1) -> list[str]:
        ids, mask = self._prompts(pairs, max_source_length)
        out = self.model.generate(input_ids=ids, attention_mask=mask, num_beams=num_beams,
                                  num_return_sequences=num_return,
                                  max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.pad_id,
                                  eos_token_id=list(self.stop_ids))
        return decode_answers(self.tokenizer, out[:, ids.shape[1]:], stop=self.prompt.answer_stop)  # answer only

    def start_decoding(self, pairs: Pairs, max_source_length: int) -> _CausalSteps:
        return _CausalSteps(self.model, *self._prompts(pairs, max_source_length))

    def decode(self, token_ids: torch.Tensor) -> list[str]:
        return decode_answers(self.tokenizer, token_ids, stop=self.prompt.answer_stop)
