"""Sentence-aware chunking of a cleaned document into passages of at most `size` tokens of the passage tokenizer.

A passage is a run of whole sentences; a sentence longer than `size` alone is cut into token windows (at word starts
where possible). Consecutive passages share up to `overlap` tokens: whole trailing sentences of the previous passage,
or, inside a long sentence, its last `overlap` tokens. Every passage is a slice `text[start:end]` of the document, so
character offsets (QA alignment) carry over exactly.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from tokenizers import Tokenizer

# A sentence ends at . ! ? (or …), maybe followed by closing quotes/brackets, then whitespace and an opening
# character: a capital, a digit, a quote or bracket. Paragraph breaks always end a sentence.
_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9\u00c0-\u00de])")
_PARAGRAPH = re.compile(r"\n\s*\n")
# Words after which a period does not end the sentence ("Dr. Smith", "e.g. This"); single capitals are initials.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt vs etc e.g i.e cf al fig figs no nos vol vols pp ed eds inc ltd co corp dept "
    "gen col lt sgt capt rev jan feb mar apr jun jul aug sep sept oct nov dec approx ca u.s u.k".split()
)


@dataclass(frozen=True)
class Span:
    """A passage: `text[start:end]` of its document, `n_tokens` tokens long (no special tokens)."""

    start: int
    end: int
    n_tokens: int


class TokenCounter:
    """Token counts and offsets from a Hugging Face fast tokenizer, without special tokens, truncation or padding.

    Args:
        tokenizer: a transformers fast tokenizer (it must have `backend_tokenizer`).
    """

    def __init__(self, tokenizer) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if not isinstance(backend, Tokenizer):
            raise TypeError(f"{type(tokenizer).__name__} is not a fast tokenizer: chunking needs token offsets")
        # A copy: the tokenizer as saved may truncate or pad (MiniLM's pads to 128), which would miscount.
        self._backend = copy.deepcopy(backend)
        self._backend.no_truncation()
        self._backend.no_padding()

    def count(self, texts: list[str]) -> list[int]:
        """Tokens in each text."""
        return [len(e.ids) for e in self._backend.encode_batch(texts, add_special_tokens=False)]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character offsets of each token of `text`."""
        return self._backend.encode(text, add_special_tokens=False).offsets


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence, whitespace between sentences excluded."""
    spans = []
    for para in _spans_between(text, _PARAGRAPH):
        start = para[0]
        for m in _END.finditer(text, para[0], para[1]):
            if _is_abbreviation(text, start, m.start()):
                continue
            end = m.end() - len(m.group()) + len(m.group().rstrip())
            spans.append((start, end))
            start = m.end()
        if start < para[1]:
            spans.append((start, para[1]))
    return spans


def chunk_spans(text: str, counter: TokenCounter, size: int, overlap: int) -> list[Span]:
    """Cut a document into passages of at most `size` tokens, sharing at most `overlap` tokens.

    Args:
        text: the cleaned document.
        counter: the passage tokenizer.
        size: most tokens per passage.
        overlap: most tokens two consecutive passages share (< size).

    Returns:
        The passages in document order; none for a text without tokens.
    """
    units = _units(text, counter, size, overlap)
    chunks: list[Span] = []
    i = 0
    while i < len(units):
        j, total = i + 1, units[i].n_tokens
        while j < len(units) and total + units[j].n_tokens <= size:
            total += units[j].n_tokens
            j += 1
        # Token counts of separate sentences add up for WordPiece; other tokenizers may merge across the space, so
        # the joined text is measured and sentences handed back until it fits.
        n = counter.count([text[units[i].start:units[j - 1].end]])[0]
        while n > size and j > i + 1:
            j -= 1
            n = counter.count([text[units[i].start:units[j - 1].end]])[0]
        if n > 0:
            chunks.append(Span(units[i].start, units[j - 1].end, n))
        if j == len(units):
            break
        i = _overlap_start(units, i, j, overlap, size)
    return chunks


def _units(text: str, counter: TokenCounter, size: int, overlap: int) -> list[Span]:
    """Sentences with their token counts, sentences over `size` replaced by their token windows."""
    sentences = sentence_spans(text)
    counts = counter.count([text[s:e] for s, e in sentences])
    units: list[Span] = []
    for (s, e), n in zip(sentences, counts, strict=True):
        if n <= size:
            units.append(Span(s, e, n))
        else:
            units.extend(_windows(text, s, e, counter, size, overlap))
    return units


def _windows(text: str, start: int, end: int, counter: TokenCounter, size: int, overlap: int) -> list[Span]:
    """Split `text[start:end]` (one long sentence) into windows of at most `size` tokens overlapping by `overlap`.

    Windows start and end at word boundaries when a word boundary exists in range: a window that began inside a word
    would tokenize its first piece differently (WordPiece "##ing" alone is "ing").
    """
    sentence = text[start:end]
    offs = counter.offsets(sentence)
    word_start = [k == 0 or offs[k][0] > offs[k - 1][1] or not sentence[offs[k][0]].isalnum()
                  or not sentence[offs[k - 1][1] - 1].isalnum() for k in range(len(offs))]
    spans: list[Span] = []
    a = 0
    while a < len(offs):
        b = min(a + size, len(offs))
        if b < len(offs):  # end before a word start, unless the word alone is longer than the window
            back = next((k for k in range(b, a, -1) if word_start[k]), None)
            b = back if back is not None else b
        while True:
            s, e = start + offs[a][0], start + offs[b - 1][1]
            n = counter.count([text[s:e]])[0]
            if n <= size or b == a + 1:
                break
            b -= 1
        spans.append(Span(s, e, n))
        if b == len(offs):
            break
        nxt = max(b - overlap, a + 1)
        # Move the next start forward to a word start, but never past b (that would leave a gap).
        a = next((k for k in range(nxt, b + 1) if k == b or word_start[k]), b)
    return spans


def _overlap_start(units: list[Span], i: int, j: int, overlap: int, size: int) -> int:
    """Where the passage after units[i:j] starts: as many trailing units as fit in `overlap` tokens, never i, and
    few enough that units[j] still fits after them (else that passage would repeat the overlap and nothing new)."""
    k, shared = j, 0
    while (k - 1 > i and shared + units[k - 1].n_tokens <= overlap
           and shared + units[k - 1].n_tokens + units[j].n_tokens <= size):
        k -= 1
        shared += units[k].n_tokens
    return k


def _spans_between(text: str, separator: re.Pattern) -> list[tuple[int, int]]:
    spans, start = [], 0
    for m in separator.finditer(text):
        if m.start() > start:
            spans.append((start, m.start()))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def _is_abbreviation(text: str, start: int, dot: int) -> bool:
    """Whether the word ending at `dot` (the sentence-ending mark) is an abbreviation or an initial."""
    if text[dot] != ".":
        return False
    word = text[start:dot].rsplit(None, 1)[-1] if text[start:dot].strip() else ""
    word = word.lstrip("\"'(\u201c\u2018[").casefold()
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())
