"""rag_e2e.eval.metrics on hand-computed SQuAD EM/F1, ROUGE-L, BLEU, DPR answer matching, recall@k and MRR."""

from __future__ import annotations

import math

import pytest

from rag_e2e.eval.metrics import (
    aggregate,
    corpus_bleu,
    exact_match,
    f1_score,
    gold_rank,
    has_answer,
    mrr,
    normalize_answer,
    recall_at_k,
    rouge_l,
)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("The Denver Broncos", "denver broncos"),
        ("  Denver   Broncos!! ", "denver broncos"),
        ("an apple, a pear & the fig.", "apple pear fig"),
        ("Theory of the Leisure Class", "theory of leisure class"),  # "the" only as a whole word
        ("U.S.", "us"),
        ("", ""),
    ],
)
def test_normalize_answer(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_exact_match():
    assert exact_match("the Denver Broncos", ["Denver Broncos"]) == 1.0
    assert exact_match("Denver", ["Carolina Panthers", "Denver Broncos"]) == 0.0
    assert exact_match("carolina panthers.", ["Carolina Panthers", "Denver Broncos"]) == 1.0


def test_f1_by_hand():
    # "denver broncos won" vs "denver broncos": 2 common tokens, P = 2/3, R = 1, F1 = 2PR/(P+R) = 0.8
    assert f1_score("Denver Broncos won", ["Denver Broncos"]) == pytest.approx(0.8)
    # "broncos" vs "denver broncos": P = 1, R = 1/2, F1 = 2/3; the max over golds picks the exact one.
    assert f1_score("Broncos", ["Denver Broncos"]) == pytest.approx(2 / 3)
    assert f1_score("Broncos", ["Denver Broncos", "the Broncos"]) == 1.0
    # Repeated tokens count with multiplicity: "x y y" vs "y y z" -> common {y: 2}, P = R = 2/3.
    assert f1_score("x y y", ["y y z"]) == pytest.approx(2 / 3)
    assert f1_score("Carolina", ["Denver Broncos"]) == 0.0


def test_f1_empty_after_normalization():
    assert f1_score("the", ["a"]) == 1.0  # both empty: agree with EM
    assert exact_match("the", ["a"]) == 1.0
    assert f1_score("", ["Denver"]) == 0.0
    assert f1_score("Denver", ["the"]) == 0.0


def test_golds_must_be_a_non_empty_list():
    with pytest.raises(ValueError, match="non-empty"):
        exact_match("x", [])
    with pytest.raises(ValueError, match="non-empty"):
        f1_score("x", "x")


def test_has_answer():
    text = "The Denver Broncos defeated the Carolina Panthers 24–10 at Levi's Stadium."
    assert has_answer(text, ["denver broncos"])
    assert has_answer(text, ["Panthers", "nothing"])
    assert has_answer(text, ["24–10"])
    assert has_answer(text, ["levi's stadium"])
    assert not has_answer(text, ["Broncos defeated Carolina"])  # not contiguous
    assert not has_answer("a party in the park", ["art"])  # no match inside a word
    assert not has_answer("a party in the park", ["par"])
    assert has_answer("Café Paris", ["cafe\u0301"])  # decomposed accent matches composed
    assert not has_answer("anything", ["", "  "])  # empty answers never match


def test_gold_rank():
    pids = ["p3", "p1", "p2"]
    assert gold_rank(pids, ["p2", "p1"]) == 2
    assert gold_rank(pids, ["p9"]) is None
    texts = ["nothing here", "still nothing", "the answer is Paris."]
    assert gold_rank(pids, [], texts, ["paris"]) == 3
    assert gold_rank(pids, [], texts, ["london"]) is None
    # With gold ids, the texts are not consulted.
    assert gold_rank(pids, ["p3"], texts, ["paris"]) == 1
    with pytest.raises(ValueError, match="retrieved_texts and answers"):
        gold_rank(pids, [])
    with pytest.raises(ValueError, match="2 retrieved_texts for 3"):
        gold_rank(pids, [], texts[:2], ["paris"])


RANKS = [1, 3, None, 2, 10]


def test_recall_at_k():
    assert recall_at_k(RANKS, 1) == pytest.approx(1 / 5)
    assert recall_at_k(RANKS, 3) == pytest.approx(3 / 5)
    assert recall_at_k(RANKS, 10) == pytest.approx(4 / 5)
    assert recall_at_k([], 5) == 0.0
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(RANKS, 0)


def test_mrr():
    assert mrr(RANKS) == pytest.approx((1 + 1 / 3 + 0 + 1 / 2 + 1 / 10) / 5)
    assert mrr(RANKS, cutoff=3) == pytest.approx((1 + 1 / 3 + 1 / 2) / 5)
    assert mrr([None, None]) == 0.0
    assert mrr([]) == 0.0


def test_aggregate():
    predictions = ["the Denver Broncos", "Denver Broncos won", "Paris"]
    golds = [["Denver Broncos"], ["Denver Broncos"], ["London"]]
    ranks = [1, 6, None]
    metrics = aggregate(predictions, golds, ranks, ks=(1, 5, 10))
    assert metrics == pytest.approx(
        {
            "em": 1 / 3,
            "f1": (1 + 0.8 + 0) / 3,
            "recall@1": 1 / 3,
            "recall@5": 1 / 3,
            "recall@10": 2 / 3,
            "mrr": (1 + 1 / 6) / 3,
        }
    )
    with pytest.raises(ValueError, match="lengths differ"):
        aggregate(predictions, golds, ranks[:2])


@pytest.mark.parametrize("ks", [(1,), (1, 5, 10), (3, 20, 128)])
def test_metric_names_are_the_keys_aggregate_returns(ks):
    from rag_e2e.eval.metrics import metric_names

    assert list(aggregate(["a"], [["a"]], [2], ks=ks)) == metric_names(ks)


def test_rouge_l_by_hand():
    # "a b c d" vs "a b x d": LCS "a b d" = 3 of 4 tokens each way, P = R = F = 3/4.
    assert rouge_l("a b c d", ["a b x d"]) == pytest.approx(0.75)
    # "a b c" vs "a x b y c z": LCS 3, P = 3/3, R = 3/6, F = 2PR/(P+R) = 2/3; order matters, gaps do not.
    assert rouge_l("a b c", ["a x b y c z"]) == pytest.approx(2 / 3)
    assert rouge_l("c b a", ["a b c"]) == pytest.approx(1 / 3)  # LCS 1
    # Max over golds; case and punctuation are dropped by rouge-score's tokenizer.
    assert rouge_l("Jade Tiger!", ["red fox", "jade tiger"]) == 1.0
    assert rouge_l("", ["a"]) == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        rouge_l("a", [])


def test_corpus_bleu_by_hand():
    assert corpus_bleu(["the cat sat", "a dog ran far away"], [["the cat sat"], ["A dog ran far away"]]) == (
        pytest.approx(1.0))
    # 6 tokens vs 6: clipped n-gram precisions 5/6, 3/5, 2/4, 1/3, brevity penalty 1 -> (1/12) ** (1/4).
    assert corpus_bleu(["the cat sat on the mat"], [["the cat sat on a mat"]]) == pytest.approx((1 / 12) ** 0.25)
    # All precisions 1, hypothesis 4 tokens vs reference 6: brevity penalty exp(1 - 6/4).
    assert corpus_bleu(["a b c d"], [["a b c d e f"]]) == pytest.approx(math.exp(-0.5))
    # Corpus level: counts are summed over questions. 4-grams 1/2, 3-grams 3/4, 2-grams 5/6, 1-grams 7/8.
    assert corpus_bleu(["a b c d", "w x y z"], [["a b c d"], ["w x y q"]]) == pytest.approx(
        (7 / 8 * 5 / 6 * 3 / 4 * 1 / 2) ** 0.25)
    # Two-word answers have no 3- or 4-grams; only orders 1 and 2 count: sqrt(3/4 * 1/2).
    assert corpus_bleu(["jade tiger", "red fox"], [["Jade Tiger"], ["red cat"]]) == pytest.approx(math.sqrt(0.375))


def test_corpus_bleu_several_references():
    # Each n-gram is clipped by its best reference; the closest reference length gives the brevity penalty.
    assert corpus_bleu(["a b c d", "p q r s"], [["a b x d", "a b c d"], ["z", "p q r s"]]) == pytest.approx(1.0)
    assert corpus_bleu([], []) == 0.0
    with pytest.raises(ValueError, match="lengths differ"):
        corpus_bleu(["a"], [])
    with pytest.raises(ValueError, match="non-empty"):
        corpus_bleu(["a"], [[]])


def test_rouge_scorer_leaves_logging_and_stderr_alone():
    """rouge-score's absl handler, closed by a later logging reconfiguration (Hydra), must not close our stderr,
    and building the scorer must not add a root handler."""
    import logging
    import sys

    from absl import logging as absl_logging

    from rag_e2e.eval.metrics import _rouge_l_scorer

    roots = list(logging.root.handlers)
    _rouge_l_scorer.cache_clear()
    rouge_l("a b", ["a"])
    assert logging.root.handlers == roots
    stderr = sys.stderr
    absl_logging.get_absl_handler().python_handler.close()
    assert not stderr.closed
    stderr.write("")  # still writable
