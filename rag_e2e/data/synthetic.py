"""A deterministic synthetic knowledge base for the default experiment.

Each made-up entity ("Tovarin Beskal") has a few attributes, one passage each, whose values are word pairs used
nowhere else ("Amber Falcon is the town where Tovarin Beskal was born."), so an answer can only be read from its own
passage: the generator cannot guess it (one of 3,416 pairs) and no other passage can supply it. Questions name the
entity and ask for one attribute. Per KB entity one attribute's question is held out (dev or test) and the others
are for training, so a test question's gold passage was never retrieved for training, though its entity's name and
its relation were each seen in other training questions.

Reader-only entities are NOT in the knowledge base: their (passage, question, answer) triples teach the generator
to read, without leaking which KB passage answers which question.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rag_e2e.data.types import Passage, QAExample

# Answers are two common words ("Amber Falcon"): each word recurs across the KB, so a small reader learns to
# copy it quickly, while each pair is used once, so the answer string still occurs in a single passage.
_ADJECTIVES = (
    "amber azure bitter bold brave bright calm clever cold copper coral crimson dark deep dusty eager early fierce "
    "gentle giant golden green grey happy hidden hollow humble iron ivory jade lazy little lone lucky marble misty "
    "noble northern pale proud purple quiet rapid red rough royal rusty scarlet secret silent silver small smooth "
    "solar southern steady swift tall violet warm wild"
).split()
_NOUNS = (
    "anchor arrow badger bear beacon bell birch canyon castle cedar cliff cloud comet crane crow dawn eagle falcon "
    "feather fern flame forest fox garden glacier harbor hawk heron hill island lantern maple meadow mirror moon "
    "mountain oak otter owl pine rabbit raven ridge rock rose shadow sparrow star stone storm summit thunder tiger "
    "valley willow wolf"
).split()

# Filler sentences (no word from the answer vocabulary above): appended to passages with `filler_sentences` > 0.
_FILLER = [
    "Many people walk along the road during the long summer evenings.",
    "The local market opens early on most weekdays.",
    "Visitors often ask about the history of the old square.",
    "There is a small library next to the train station.",
    "Several families moved here after the war ended.",
    "The annual fair brings music and food to the streets.",
    "Children play games in the park until it gets dark.",
    "A narrow bridge crosses the water near the mill.",
    "The winters are usually mild and rather wet.",
    "Most houses in the area were built of brick.",
    "Farmers sell fruit and vegetables at the weekly market.",
    "The church bells ring every hour during the day.",
    "An old newspaper reported on the event at length.",
    "Tourists come in large numbers every spring.",
    "The school was rebuilt twice over the last century.",
    "A famous painter once lived in a house on this street.",
    "People here speak with a distinct regional accent.",
    "The museum keeps records of births and marriages.",
    "Trade with nearby towns grew during those years.",
    "Local bakers are known for their sweet bread.",
    "The main road was paved only after many complaints.",
    "Elections are held in the town hall every four years.",
    "Fishing boats leave the harbour before sunrise.",
    "The theatre shows plays written by local authors.",
]

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "tr", "st"]
_VOWELS = ["a", "e", "i", "o", "u"]
_CODAS = ["", "", "n", "r", "l", "s", "k", "m"]

# (attribute, passage, question); {name} is the entity, {value} the answer. The answer opens its passage, so the
# reader's job is a plain copy and the learning that remains is the retriever's.
_ATTRIBUTES = [
    ("town", "{value} is the town where {name} was born.", "where was {name} born?"),
    ("company", "{value} is the company that {name} works for.", "which company does {name} work for?"),
    ("pet", "{value} is the name of the pet of {name}.", "what is the name of the pet of {name}?"),
    ("river", "{value} is the river that {name} lives near.", "which river does {name} live near?"),
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


def _entity(prefix: str, name: str, values: list[str],
            fillers: list[str] | None = None) -> list[tuple[Passage, QAExample]]:
    """One passage and one question per attribute of an entity (each passage followed by its filler, if any)."""
    out = []
    for i, ((attr, sentence, question), value) in enumerate(zip(_ATTRIBUTES, values)):
        text = sentence.format(name=name, value=value) + (f" {fillers[i]}" if fillers and fillers[i] else "")
        passage = Passage(pid=f"{prefix}-{attr}", text=text, title="")
        qa = QAExample(qid=passage.pid, question=question.format(name=name), answers=(value,),
                       gold_pids=(passage.pid,), group=prefix, context=(passage.title, passage.text))
        out.append((passage, qa))
    return out


def make_synthetic_kb(num_entities: int, num_reader_entities: int, attributes_per_entity: int,
                      seed: int, twins: bool = False, filler_sentences: int = 0,
                      distractor_passages: int = 0) -> SyntheticKB:
    """Generate the knowledge base; the same arguments always give the same data.

    Args:
        num_entities: entities in the corpus; each has `attributes_per_entity` passages.
        num_reader_entities: extra entities outside the corpus, for the reader-only loss.
        attributes_per_entity: attributes (= passages = questions) per entity, 1 to 4.
        seed: RNG seed.
        twins: KB entities come in pairs whose names are the same two words swapped ("Tovak Relin" and "Relin
            Tovak"), so their passages hold the same words and differ only in order. A bag-of-words view of a
            passage, like a fixed mean-pooled encoder, cannot tell them apart; telling them apart needs a passage
            encoder that learns word order.
        filler_sentences: unrelated sentences appended to each KB passage, drawn at random from a fixed pool. In a
            fixed mean-pooled passage vector they drown the few tokens that identify the entity (the same words
            recur, in different mixes, across passages); a passage tower that trains can learn to discount them
            (the `synthetic_hard` experiment). Reader-only passages get none.
        distractor_passages: passages about no entity appended to the corpus (pids `x<n>`): two filler sentences and
            a few made-up words each, answering no question. They scale the corpus (the refresh benchmark's 1M
            passages) without touching the questions; generated from their own seed, so the entities are unchanged.
    """
    rng = random.Random(seed)
    total = num_entities + num_reader_entities
    taken: set[str] = set()
    first = _unique_words(rng, total, 2, taken)
    last = _unique_words(rng, total, 2, taken)
    pairs = [f"{a} {n}".title() for a in _ADJECTIVES for n in _NOUNS]
    if total * attributes_per_entity > len(pairs):
        raise ValueError(f"at most {len(pairs)} answers: lower num_entities, num_reader_entities or attributes")
    values = rng.sample(pairs, total * attributes_per_entity)

    corpus: list[Passage] = []
    train: list[QAExample] = []
    held_out: list[QAExample] = []
    reader: list[QAExample] = []
    for i in range(total):
        in_kb = i < num_entities
        vals = values[i * attributes_per_entity : (i + 1) * attributes_per_entity]
        name = f"{last[i - 1]} {first[i - 1]}" if twins and in_kb and i % 2 == 1 else f"{first[i]} {last[i]}"
        fillers = [" ".join(rng.sample(_FILLER, filler_sentences)) for _ in vals] if in_kb else None
        items = _entity(f"e{i}" if in_kb else f"r{i - num_entities}", name, vals, fillers)
        if not in_kb:
            reader.extend(qa for _, qa in items)
            continue
        corpus.extend(p for p, _ in items)
        held = rng.randrange(len(items))  # this attribute is never asked in training
        held_out.append(items[held][1])
        train.extend(qa for j, (_, qa) in enumerate(items) if j != held)
    rng.shuffle(held_out)
    n_dev = len(held_out) // 3
    corpus.extend(_distractors(distractor_passages, seed))
    return SyntheticKB(corpus, train, held_out[:n_dev], held_out[n_dev:], reader)


def _distractors(count: int, seed: int) -> list[Passage]:
    rng = random.Random(f"distractors-{seed}")
    return [Passage(pid=f"x{i}", text=" ".join([*rng.sample(_FILLER, 2), *(_word(rng, 2) for _ in range(3))]),
                    title="") for i in range(count)]
