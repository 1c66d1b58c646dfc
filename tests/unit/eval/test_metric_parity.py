"""EM/F1 against the official SQuAD v1.1 evaluation logic, and has_answer against DPR's, so numbers compare with
published ones. The SQuAD reference below is written from the script's published definition (evaluate-v1.1.py:
normalize = lower, drop punctuation, drop articles, collapse whitespace; F1 over a bag of tokens; max over golds),
independently of rag_e2e's code."""

import re
import string
import unicodedata
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag_e2e.eval.metrics import exact_match, f1_score, has_answer


def _official_normalize(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def _official_f1(prediction, ground_truth):
    prediction_tokens = _official_normalize(prediction).split()
    ground_truth_tokens = _official_normalize(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def _official_em(prediction, ground_truth):
    return _official_normalize(prediction) == _official_normalize(ground_truth)


def _max_over(fn, prediction, golds):
    return max(fn(prediction, g) for g in golds)


WORDS = ["the", "The", "a", "an", "An", "Denver", "Broncos", "broncos", "1,000", "U.S.", "café", "cafe\u0301", "naïve",
         "don't", "(a)", "--", "!", "the.", "Anne", "theory", "ß", "İstanbul", "42", "\t", "  ", "\n"]
ANSWER = st.lists(st.sampled_from(WORDS) | st.text(max_size=6), max_size=8).map(" ".join)


@settings(max_examples=2000, deadline=None)
@given(ANSWER, st.lists(ANSWER, min_size=1, max_size=3))
def test_em_and_f1_equal_the_official_v1_1_script(prediction, golds):
    assert exact_match(prediction, golds) == float(_max_over(_official_em, prediction, golds))
    ours, official = f1_score(prediction, golds), _max_over(_official_f1, prediction, golds)
    both_empty = any(not _official_normalize(prediction).split() and not _official_normalize(g).split()
                     for g in golds)
    if both_empty:  # the one documented difference: 1.0 (SQuAD 2.0's rule, agreeing with EM) where v1.1 gives 0
        assert ours == 1.0 and exact_match(prediction, golds) == 1.0
    else:
        assert ours == pytest.approx(official, abs=1e-12)


def test_the_by_hand_squad_cases():
    assert exact_match("The Denver Broncos!", ["denver broncos"]) == 1.0
    assert f1_score("Denver Broncos won", ["the Denver Broncos"]) == pytest.approx(0.8)
    assert _official_f1("the", "a") == 0 and f1_score("the", ["a"]) == 1.0  # the documented difference


# DPR's has_answer (dpr/data/qa_validation.py) on hand-made cases, each decided by its definition: NFD text,
# SimpleTokenizer tokens ([\p{L}\p{N}\p{M}]+ or one non-separator, non-control character), uncased, and a match is a
# contiguous run of whole answer tokens.
DPR_CASES = [
    ("The party was in Paris.", ["art"], False),  # a word inside another is not a match
    ("The party was in Paris.", ["PARIS"], True),  # uncased
    ("He was born in 1,000 BC.", ["1,000"], True),  # "1" "," "000" on both sides
    ("a café in town", ["cafe\u0301"], True),  # composed vs decomposed accent: equal after NFD
    ("a cafe in town", ["café"], False),  # but an accent is not dropped
    ("हिन्दी भाषा", ["हिन"], False),  # a vowel sign (Mc/Mn) stays inside its word
    ("हिन्दी भाषा", ["हिन्दी"], True),
    ("zero\u200dwidth", ["zerowidth"], False),  # a format character (Cf) is not a token, but it splits the word
    ("zero\u200dwidth", ["zero width"], True),
    ("snake_case here", ["snake"], True),  # "_" is its own token
    ("nothing here", ["", "  "], False),  # answers with no tokens never match
    ("Straße", ["strasse"], False),  # lower(), not casefold()
]


@pytest.mark.parametrize(("text", "answers", "want"), DPR_CASES)
def test_has_answer_decides_as_dpr(text, answers, want):
    assert has_answer(text, answers) is want


def test_nfd_is_what_the_tokens_see():
    assert unicodedata.normalize("NFD", "é") != "é"
    assert has_answer(unicodedata.normalize("NFC", "Ångström units"), [unicodedata.normalize("NFD", "ångström")])
