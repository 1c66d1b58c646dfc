"""QA and retrieval metrics: SQuAD EM/F1, ROUGE-L, corpus BLEU, DPR answer matching, recall@k, MRR, R-precision.
Pure functions."""

from __future__ import annotations

import functools
import re
import string
import sys
import unicodedata
from collections import Counter
from collections.abc import Sequence

import regex

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# DPR's SimpleTokenizer (dpr/utils/tokenizers.py): runs of letters, digits and combining marks, or any other single
# character that is neither a separator nor a control/format character; its has_answer reads NFD text, uncased.
_TOKEN = regex.compile(r"[\p{L}\p{N}\p{M}]+|[^\p{Z}\p{C}]", flags=regex.IGNORECASE | regex.UNICODE | regex.MULTILINE)


def normalize_answer(s: str) -> str:
    """Normalize as the official SQuAD script does: lowercase, drop punctuation and articles, collapse whitespace.

    Args:
        s: an answer string.

    Returns:
        The normalized string, e.g. "The  Denver Broncos!" -> "denver broncos".
    """
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized gold answer, else 0.0.

    Raises:
        ValueError: `golds` is empty.
    """
    _check_golds(golds)
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(gold) for gold in golds))


def f1_score(prediction: str, golds: Sequence[str]) -> float:
    """Token-level SQuAD F1 of the prediction against its best-matching gold answer.

    When a prediction or gold normalizes to no tokens, F1 is 1.0 if both are empty and 0.0 otherwise (the SQuAD 2.0
    official script's rule; the 1.1 script returns 0.0 even when both are empty, which would give EM 1 with F1 0).

    Raises:
        ValueError: `golds` is empty.
    """
    _check_golds(golds)
    pred_tokens = normalize_answer(prediction).split()
    return max(_f1(pred_tokens, normalize_answer(gold).split()) for gold in golds)


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(pred_tokens), num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _check_golds(golds: Sequence[str]) -> None:
    # A bare string would be scored character by character; an empty list has no max.
    if isinstance(golds, str) or not golds:
        raise ValueError(f"golds must be a non-empty sequence of answer strings, got {golds!r}")


def _tokens(text: str) -> list[str]:
    # NFD, as DPR: a composed and a decomposed accent compare equal, and a mark stays inside its word (splitting at
    # marks, as a letters-only pattern does, would let "हिन" match inside "हिन्दी").
    return [t.lower() for t in _TOKEN.findall(unicodedata.normalize("NFD", text))]


def has_answer(text: str, answers: Sequence[str]) -> bool:
    """Whether any answer occurs in `text` as a contiguous run of whole tokens (DPR's string-match recall).

    Matching is case-insensitive on word/punctuation tokens, so "art" does not match inside "party".
    Answers with no tokens never match.

    Args:
        text: a passage.
        answers: reference answer strings.
    """
    tokens = _tokens(text)
    for answer in answers:
        ans = _tokens(answer)
        if ans and any(tokens[i : i + len(ans)] == ans for i in range(len(tokens) - len(ans) + 1)):
            return True
    return False


def gold_rank(
    retrieved_pids: Sequence[str],
    gold_pids: Sequence[str],
    retrieved_texts: Sequence[str] | None = None,
    answers: Sequence[str] | None = None,
) -> int | None:
    """1-based rank of the first relevant retrieved passage, or None when none is relevant.

    A passage is relevant when its id is in `gold_pids`; when `gold_pids` is empty (e.g. NQ-open), when its text
    contains an answer (`has_answer`).

    Args:
        retrieved_pids: ids in rank order, best first.
        gold_pids: ids of passages known to hold the answer; may be empty.
        retrieved_texts: texts aligned with `retrieved_pids`; needed only when `gold_pids` is empty.
        answers: reference answers; needed only when `gold_pids` is empty.

    Raises:
        ValueError: `gold_pids` is empty and texts or answers are missing, or texts and ids differ in length.
    """
    if gold_pids:
        gold = set(gold_pids)
        return next((rank for rank, pid in enumerate(retrieved_pids, start=1) if pid in gold), None)
    if retrieved_texts is None or answers is None:
        raise ValueError("gold_pids is empty: pass retrieved_texts and answers to match answers in text")
    if len(retrieved_texts) != len(retrieved_pids):
        raise ValueError(f"{len(retrieved_texts)} retrieved_texts for {len(retrieved_pids)} retrieved_pids")
    return next((rank for rank, text in enumerate(retrieved_texts, start=1) if has_answer(text, answers)), None)


def recall_at_k(ranks: Sequence[int | None], k: int) -> float:
    """Fraction of questions whose first relevant passage is at rank <= k (None is a miss); 0.0 for no questions."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return sum(r is not None and r <= k for r in ranks) / len(ranks) if ranks else 0.0


def r_precision(retrieved: Sequence[str], gold: Sequence[str]) -> float:
    """R-precision (KILT's retrieval measure, at passage level): of the top R retrieved, the fraction that are gold,
    R being the number of distinct gold passages. |top-R ∩ gold| / R; a list shorter than R counts what it has.

    Raises:
        ValueError: no gold passage (R-precision is defined only where the data has provenance).
    """
    wanted = set(gold)
    if not wanted:
        raise ValueError("r_precision needs at least one gold passage id")
    return sum(pid in wanted for pid in retrieved[: len(wanted)]) / len(wanted)


def mrr(ranks: Sequence[int | None], cutoff: int | None = None) -> float:
    """Mean reciprocal rank; misses (None) and ranks beyond `cutoff` count 0. 0.0 for no questions.

    Args:
        ranks: per-question 1-based rank of the first relevant passage, or None.
        cutoff: if given, compute MRR@cutoff.
    """
    hits = [1.0 / r for r in ranks if r is not None and (cutoff is None or r <= cutoff)]
    return sum(hits) / len(ranks) if ranks else 0.0


def metric_names(ks: Sequence[int] = (1, 5, 10), answers: bool = True) -> list[str]:
    """The keys `aggregate` returns for these cut-offs (`answers=False`: those of `retrieval_metrics` alone)."""
    return [*(["em", "f1"] if answers else []), *(f"recall@{k}" for k in ks), "mrr"]


def answer_metrics(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """{"em", "f1"}: mean SQuAD exact match and F1, fractions in [0, 1] (0.0 for no questions).

    Raises:
        ValueError: the two sequences differ in length.
    """
    if len(predictions) != len(golds):
        raise ValueError(f"lengths differ: {len(predictions)} predictions, {len(golds)} golds")
    n = len(predictions)
    return {"em": sum(exact_match(p, g) for p, g in zip(predictions, golds)) / n if n else 0.0,
            "f1": sum(f1_score(p, g) for p, g in zip(predictions, golds)) / n if n else 0.0}


def retrieval_metrics(ranks: Sequence[int | None], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """{"recall@{k}" for each k, "mrr"} from gold ranks (see `gold_rank`), fractions in [0, 1].

    recall@k for k above the number of passages retrieved equals recall@(that number); it is computed anyway so a
    metrics table always has the same keys.
    """
    metrics = {f"recall@{k}": recall_at_k(ranks, k) for k in ks}
    metrics["mrr"] = mrr(ranks)
    return metrics


def aggregate(
    predictions: Sequence[str],
    golds: Sequence[Sequence[str]],
    ranks: Sequence[int | None],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Corpus-level metrics, each a fraction in [0, 1]: `answer_metrics` and `retrieval_metrics` together.

    Args:
        predictions: generated answers, one per question.
        golds: reference answers, one sequence per question.
        ranks: gold passage ranks, one per question (see `gold_rank`).
        ks: cut-offs for recall@k.

    Returns:
        {"em", "f1", "recall@{k}" for each k, "mrr"}.

    Raises:
        ValueError: the three sequences differ in length.
    """
    if not len(predictions) == len(golds) == len(ranks):
        raise ValueError(f"lengths differ: {len(predictions)} predictions, {len(golds)} golds, {len(ranks)} ranks")
    return {**answer_metrics(predictions, golds), **retrieval_metrics(ranks, ks)}


@functools.cache
def _rouge_l_scorer():
    # Imported on first use: rouge_score pulls in nltk (over a second), which training never needs.
    import logging

    from absl import logging as absl_logging
    from rouge_score import rouge_scorer

    # Importing absl makes a log handler bound to the sys.stderr of that moment. Whoever later reconfigures logging
    # (Hydra's dictConfig does, per job) closes every handler ever made, and absl's then closes that stream if it is
    # no longer sys.stderr (under pytest, the capture file). It writes to the current sys.stderr instead.
    absl_logging.get_absl_handler().python_handler.stream = _CurrentStderr()
    before = list(logging.root.handlers)
    scorer = rouge_scorer.RougeScorer(["rougeL"])  # logs through the root logger with none set: basicConfig
    for handler in [h for h in logging.root.handlers if h not in before]:  # a library does not configure logging
        logging.root.removeHandler(handler)
    return scorer


class _CurrentStderr:
    """A stream that writes to whatever sys.stderr is now, and that closing leaves open."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def close(self) -> None:
        pass


def rouge_l(prediction: str, golds: Sequence[str]) -> float:
    """ROUGE-L F-measure (longest common subsequence of tokens) against the best-matching gold answer.

    rouge-score's tokenizer lowercases and keeps runs of letters and digits, no stemming. A prediction or gold with
    no tokens scores 0.0.

    Args:
        prediction: a generated answer.
        golds: its reference answers.

    Returns:
        The maximum over `golds` of 2PR/(P+R), P = LCS/len(prediction), R = LCS/len(gold); in [0, 1].

    Raises:
        ValueError: `golds` is empty.
    """
    _check_golds(golds)
    scorer = _rouge_l_scorer()
    return max(scorer.score(gold, prediction)["rougeL"].fmeasure for gold in golds)


def corpus_bleu(predictions: Sequence[str], references_lists: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (sacrebleu) of the predictions against each question's reference answers, on a 0-1 scale.

    sacrebleu's defaults (13a tokenization, exp smoothing) with two changes for short QA answers: case is ignored,
    as EM, F1 and ROUGE-L ignore it, and n-gram orders that no prediction is long enough to have are left out of
    the geometric mean (`use_effective_order`; otherwise a corpus of two-word answers scores 0 even when every
    answer is right). Questions may have different numbers of references.

    Args:
        predictions: generated answers, one per question.
        references_lists: reference answers, one non-empty sequence per question.

    Returns:
        sacrebleu's score / 100, in [0, 1]; 0.0 for no questions.

    Raises:
        ValueError: the two sequences differ in length, or a question has no reference.
    """
    if len(predictions) != len(references_lists):
        raise ValueError(f"lengths differ: {len(predictions)} predictions, {len(references_lists)} reference lists")
    for golds in references_lists:
        _check_golds(golds)
    if not predictions:
        return 0.0
    import sacrebleu  # on first use, as rouge_score

    # sacrebleu wants reference streams (the j-th reference of every question); None pads the shorter lists.
    n_refs = max(len(golds) for golds in references_lists)
    streams = [[golds[j] if j < len(golds) else None for golds in references_lists] for j in range(n_refs)]
    bleu = sacrebleu.corpus_bleu(list(predictions), streams, lowercase=True, use_effective_order=True)
    return bleu.score / 100
