"""A deterministic synthetic knowledge base for the default experiment.

Each made-up entity ("Tovarin Beskal") gets one passage listing a few attributes whose values are made-up words
used nowhere else ("Tovarin Beskal was born in the town of Zumerat."), so an answer can only be read from its own
passage: the generator cannot guess it and a wrong passage cannot supply it. Questions name the entity and ask for
one attribute. Per KB entity one attribute's question is held out (dev or test); the others are for training, so a
test question asks something never asked in training about an entity whose name the retriever has seen.

Reader-only entities are NOT in the knowledge base: their (passage, question, answer) triples teach the generator
to read, without leaking which KB passage answers which question.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rag_e2e.data.types import Passage, QAExample

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "tr", "st"]
_VOWELS = ["a", "e", "i", "o", "u"]
_CODAS = ["", "", "n", "r", "l", "s", "k", "m"]

# (attribute, passage sentence, question); {name} is the entity, {value} the answer.
_ATTRIBUTES = [
    ("town", "{name} was born in the town of {value}.", "where was {name} born?"),
    ("company", "{name} works for a company called {value}.", "which company does {name} work for?"),
    ("pet", "{name} has a pet named {value}.", "what is the name of the pet of {name}?"),
    ("river", "{name} lives near the river {value}.", "which river does {name} live near?"),
]


@dataclass
class SyntheticKB:
    """Corpus and question splits of one synthetic knowledge base."""

    corpus: list[Passage]
    train: list[QAExample]
    dev: list[QAExample]
    test: list[QAExample]
    reader: list[QAExample]  # reader-only examples about entities outside the corpus (each has `context`)


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))


def _unique_words(rng: random.Random, count: int, syllables: int, taken: set[str]) -> list[str]:
    words: list[str] = []
    while len(words) < count:
        w = _word(rng, syllables).capitalize()
        if w not in taken:
            taken.add(w)
            words.append(w)
    return words


def _entity(rng: random.Random, pid: str, name: str, values: list[str]) -> tuple[Passage, list[QAExample]]:
    attrs = _ATTRIBUTES[: len(values)]
    sentences = [sentence.format(name=name, value=v) for (_, sentence, _), v in zip(attrs, values)]
    rng.shuffle(sentences)
    passage = Passage(pid=pid, text=" ".join(sentences), title=name)
    questions = [
        QAExample(qid=f"{pid}-{attr}", question=q.format(name=name), answers=(v,), gold_pids=(pid,), group=pid,
                  context=(name, passage.text))
        for (attr, _, q), v in zip(attrs, values)
    ]
    return passage, questions


def make_synthetic_kb(num_entities: int, num_reader_entities: int, attributes_per_entity: int, seed: int) -> SyntheticKB:
    """Generate the knowledge base; the same arguments always give the same data.

    Args:
        num_entities: passages in the corpus (one per entity).
        num_reader_entities: extra entities outside the corpus, for the reader-only loss.
        attributes_per_entity: attributes (= questions) per entity, 2 to 4.
        seed: RNG seed.
    """
    rng = random.Random(seed)
    total = num_entities + num_reader_entities
    taken: set[str] = set()
    first = _unique_words(rng, total, 2, taken)
    last = _unique_words(rng, total, 2, taken)
    values = _unique_words(rng, total * attributes_per_entity, 3, taken)

    corpus: list[Passage] = []
    train: list[QAExample] = []
    held_out: list[QAExample] = []
    reader: list[QAExample] = []
    for i in range(total):
        in_kb = i < num_entities
        pid = f"e{i}" if in_kb else f"r{i - num_entities}"
        vals = values[i * attributes_per_entity : (i + 1) * attributes_per_entity]
        passage, questions = _entity(rng, pid, f"{first[i]} {last[i]}", vals)
        if not in_kb:
            reader.extend(questions)
            continue
        corpus.append(passage)
        held = rng.randrange(len(questions))
        held_out.append(questions[held])
        train.extend(q for j, q in enumerate(questions) if j != held)
    rng.shuffle(held_out)
    n_dev = len(held_out) // 3
    return SyntheticKB(corpus, train, held_out[:n_dev], held_out[n_dev:], reader)
