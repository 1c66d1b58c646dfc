"""The built-in synthetic knowledge base is a fair retrieval test: deterministic, answers only in their passage."""

import re

from rag_e2e.data.synthetic import make_synthetic_kb
from rag_e2e.eval.metrics import has_answer


def _name(question: str) -> str:
    """The entity named in a question: its capitalised words (template words are lower case)."""
    name = " ".join(re.findall(r"\b[A-Z][a-z]+\b", question))
    assert len(name.split()) == 2, question
    return name


def test_same_seed_same_data_other_seed_other_data():
    a, b = make_synthetic_kb(50, 10, 3, seed=1), make_synthetic_kb(50, 10, 3, seed=1)
    assert a == b
    assert make_synthetic_kb(50, 10, 3, seed=2).corpus != a.corpus


def test_sizes_and_disjoint_splits():
    kb = make_synthetic_kb(60, 12, 3, seed=0)
    assert len(kb.corpus) == 60 * 3 and len(kb.reader) == 12 * 3
    assert len(kb.train) == 60 * 2 and len(kb.dev) + len(kb.test) == 60
    ids = [ex.qid for ex in kb.train + kb.dev + kb.test]
    assert len(set(ids)) == len(ids) == len(kb.corpus)  # one question per passage
    # one held-out question per entity; its passage is never a training question's gold passage
    held = [ex.group for ex in kb.dev + kb.test]
    assert sorted(held) == sorted({ex.group for ex in kb.train})
    train_gold = {ex.gold_pids[0] for ex in kb.train}
    assert not train_gold & {ex.gold_pids[0] for ex in kb.dev + kb.test}


def test_each_answer_is_in_its_gold_passage_only():
    kb = make_synthetic_kb(80, 0, 3, seed=3)
    by_pid = {p.pid: p for p in kb.corpus}
    for ex in kb.train + kb.dev + kb.test:
        holders = [p.pid for p in kb.corpus if has_answer(p.text, ex.answers)]
        assert holders == [ex.gold_pids[0]], ex
        assert ex.answers[0] not in ex.question
        assert _name(ex.question) in by_pid[ex.gold_pids[0]].text  # the question names its entity


def test_reader_entities_are_outside_the_knowledge_base():
    kb = make_synthetic_kb(40, 20, 2, seed=0)
    corpus_text = " ".join(p.text for p in kb.corpus)
    for ex in kb.reader:
        assert ex.context is not None and has_answer(ex.context[1], ex.answers)
        assert ex.answers[0] not in corpus_text
        assert _name(ex.question) not in corpus_text


def test_twins_share_name_words_in_swapped_order():
    kb = make_synthetic_kb(10, 0, 3, seed=3, twins=True)
    by_entity = {}
    for p in kb.corpus:
        by_entity.setdefault(p.pid.split("-")[0], p.text)
    for i in range(0, 10, 2):
        a, b = by_entity[f"e{i}"], by_entity[f"e{i + 1}"]
        name_a = a.split(" was born.")[0].split("where ")[1]
        name_b = b.split(" was born.")[0].split("where ")[1]
        assert name_a != name_b and name_a.split() == name_b.split()[::-1]


def test_filler_sentences_follow_the_fact_in_kb_passages_only():
    plain, filled = make_synthetic_kb(12, 4, 3, seed=1), make_synthetic_kb(12, 4, 3, seed=1, filler_sentences=3)
    for p, q in zip(plain.corpus, filled.corpus):
        assert q.text.startswith(p.text.split(".")[0] + ".") and q.text.count(".") == 4  # fact + 3 fillers
    assert all(ex.context[1].count(".") == 1 for ex in filled.reader)  # reader passages stay plain
    answers = {ex.answers[0].lower() for ex in filled.train + filled.dev + filled.test}
    for p in filled.corpus:
        filler = p.text.split(".", 1)[1].lower()
        assert not any(a in filler for a in answers)  # no answer string hides in the filler


def test_distractor_passages_pad_the_corpus_and_leave_the_questions_alone():
    from rag_e2e.data.synthetic import make_synthetic_kb

    plain = make_synthetic_kb(20, 10, 3, seed=4)
    padded = make_synthetic_kb(20, 10, 3, seed=4, distractor_passages=50)
    assert padded.corpus[:60] == plain.corpus and len(padded.corpus) == 110
    assert (padded.train, padded.dev, padded.test, padded.reader) == (plain.train, plain.dev, plain.test, plain.reader)
    distractors = padded.corpus[60:]
    assert [p.pid for p in distractors] == [f"x{i}" for i in range(50)] and len({p.text for p in distractors}) == 50
    answers = {a for qa in plain.train + plain.dev + plain.test for a in qa.answers}
    assert not any(a in p.text for p in distractors for a in answers)  # they answer nothing
