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


def test_out_of_core_builds_tokenize_the_corpus_once_and_equal_the_in_ram_encoding(tmp_path, monkeypatch):
    import numpy as np

    from rag_e2e.retrieval import refresh, row_tokens
    from rag_e2e.retrieval.refresh import IndexBuilder

    parts = assemble_with_index()
    ram, encoder = parts.refresh.builder, parts.module.rag.encoder
    disk = IndexBuilder(ram.corpus, ram.tokenizer, ram.max_length, ram.batch_size, embeddings_dir=tmp_path,
                        embeddings_dtype="float32", shard_size=7)  # shards cut across the in-RAM batches
    tokenized = []
    for module in (refresh, row_tokens):  # every way a builder tokenizes
        real = module.tokenize_passages
        monkeypatch.setattr(module, "tokenize_passages",
                            lambda tok, batch, *a, _real=real, **k: (tokenized.append(len(batch)),
                                                                      _real(tok, batch, *a, **k))[1])
    for step in range(2):  # the initial build, then a refresh by a moved tower
        if step:
            with torch.no_grad():
                for p in encoder.passage_model.parameters():
                    p.add_(0.1 * torch.randn_like(p))
        index, stats = disk.build(encoder)
        want = ram.encode(encoder)  # in RAM, from its own (already cached) padded batches
        got = torch.from_numpy(np.array(index.p_reps))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # only batch padding widths differ
        assert stats.embeddings_path.parent == tmp_path
    assert sum(tokenized) == len(ram.corpus)  # the disk builder tokenized each passage once, over both builds
