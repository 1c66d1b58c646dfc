"""Chunking on random documents: the token bound (counted by the tokenizer itself), exact slices, sentence starts,
bounded overlap, and full coverage."""

import random

import pytest
from raw_docs import WORDS, fact

from rag_e2e.prepare.chunk import TokenCounter, chunk_spans, sentence_spans
from rag_e2e.retrieval.encoders import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm")


def _document(rng: random.Random) -> str:
    """Paragraphs of sentences of 3-30 words, with one 80-word sentence (longer than any chunk) in some."""
    paragraphs = []
    for _ in range(rng.randint(1, 4)):
        sentences = [fact(rng, rng.randint(3, 30)) for _ in range(rng.randint(1, 6))]
        if rng.random() < 0.5:
            sentences.insert(rng.randrange(len(sentences) + 1), fact(rng, 80))
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("size", "overlap"), [(16, 0), (32, 8), (64, 20)])
def test_chunks_are_bounded_exact_slices_that_cover_the_document(tokenizer, seed, size, overlap):
    rng = random.Random(seed * 100 + size)
    text = _document(rng)
    spans = chunk_spans(text, TokenCounter(tokenizer), size, overlap)
    ids = [tokenizer(text[s.start:s.end], add_special_tokens=False)["input_ids"] for s in spans]
    assert [len(i) for i in ids] == [s.n_tokens for s in spans]
    assert max(s.n_tokens for s in spans) <= size
    sentence_starts = {s for s, _ in sentence_spans(text)}
    for prev, span in zip(spans, spans[1:]):
        assert prev.start < span.start and span.start <= prev.end + 2  # in order; no gap beyond a paragraph break
        assert span.end > prev.end  # each passage brings new text, not only the previous one's overlap
        shared = text[span.start:prev.end] if span.start < prev.end else ""
        assert len(tokenizer(shared, add_special_tokens=False)["input_ids"]) <= overlap + 1  # +1: a split word
    # Every word of the document is in some passage.
    covered = set()
    for s in spans:
        covered.update(range(s.start, s.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())
    # Passages of short sentences start where a sentence starts.
    long_sentences = [(a, b) for a, b in sentence_spans(text) if len(tokenizer(text[a:b],
                                                                    add_special_tokens=False)["input_ids"]) > size]
    for s in spans:
        if not any(a <= s.start < b for a, b in long_sentences):
            assert s.start in sentence_starts


def test_sentences_do_not_break_after_abbreviations_or_initials():
    text = "Dr. Smith met J. Doe at 5 p.m. in the lab. They talked e.g. about Mars. Then they left!\n\nNew paragraph"
    sentences = [text[a:b] for a, b in sentence_spans(text)]
    assert sentences == ["Dr. Smith met J. Doe at 5 p.m. in the lab.", "They talked e.g. about Mars.",
                         "Then they left!", "New paragraph"]


def test_a_sentence_longer_than_a_chunk_is_cut_at_word_starts(tokenizer):
    rng = random.Random(5)
    text = " ".join(rng.choice(WORDS) + "ing" for _ in range(60)) + "."  # multi-piece words
    spans = chunk_spans(text, TokenCounter(tokenizer), 12, 3)
    assert len(spans) > 5 and max(s.n_tokens for s in spans) <= 12
    for s in spans:
        assert s.start == 0 or text[s.start - 1] == " "
        assert s.end == len(text) or text[s.end] == " " or text[s.end] == "."
