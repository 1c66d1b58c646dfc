"""The per-row token cache pads any set of rows exactly as tokenizing those passages does."""

import random

import pytest
import torch
from helpers import assemble_with_index

from rag_e2e.data.types import Passage
from rag_e2e.retrieval.encoders import tokenize_passages
from rag_e2e.retrieval.row_tokens import RowTokens


@pytest.mark.parametrize("side", ["right", "left"])
def test_rows_in_any_order_pad_exactly_as_tokenize_passages(side):
    parts = assemble_with_index()
    builder = parts.refresh.builder
    tokenizer = builder.tokenizer
    rng = random.Random()
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "seven"]
    # Fresh passages of random lengths, some past max_length (truncated text, title kept).
    corpus = [Passage(pid=str(i), title=rng.choice(words), text=" ".join(rng.choices(words, k=rng.randint(0, 60))))
              for i in range(40)]
    old_side = tokenizer.padding_side
    tokenizer.padding_side = side
    try:
        cache = RowTokens.tokenize(tokenizer, corpus, max_length=24, chunk=7)  # rows span several batches
        for _ in range(5):
            rows = rng.sample(range(len(corpus)), rng.randint(1, 12))
            got = cache.batch(rows)
            want = tokenize_passages(tokenizer, [corpus[r] for r in rows], 24)
            assert torch.equal(got["input_ids"], want["input_ids"])
            assert torch.equal(got["attention_mask"], want["attention_mask"])
    finally:
        tokenizer.padding_side = old_side


def test_encode_rows_equals_encoding_those_passages_freshly_tokenized():
    parts = assemble_with_index()
    builder, encoder = parts.refresh.builder, parts.module.rag.encoder
    rows = torch.randperm(len(builder.corpus))[:7]
    tok = tokenize_passages(builder.tokenizer, [builder.corpus[r] for r in rows.tolist()], builder.max_length)
    with torch.no_grad():
        encoder.passage_model.eval()
        want = encoder.encode_passage(tok["input_ids"], tok["attention_mask"]).float()
    torch.testing.assert_close(builder.encode_rows(encoder, rows), want, rtol=1e-5, atol=1e-6)
