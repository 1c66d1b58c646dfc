"""Turn a DataConfig into a corpus and train/dev/test question splits."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rag_e2e.config import DataConfig
from rag_e2e.data.catalog import fetch_hint
from rag_e2e.data.chunked import load_squad_chunked
from rag_e2e.data.corpus import load_corpus
from rag_e2e.data.mapped import open_mapped, row_lookup
from rag_e2e.data.qa import load_qa, load_squad, split_by_group
from rag_e2e.data.synthetic import make_synthetic_kb
from rag_e2e.data.types import Passage, QAExample
from rag_e2e.errors import DataFormatError


@dataclass
class RagData:
    """What one run trains and evaluates on."""

    corpus: Sequence[Passage]  # a list, or a MappedCorpus (data.mmap_corpus)
    train: list[QAExample]
    dev: list[QAExample]
    test: list[QAExample]
    reader: list[QAExample] = field(default_factory=list)  # reader-only examples (gold context, not in the corpus)
    corpus_source: str = "the synthetic knowledge base"  # where the corpus came from, for error messages

    def summary(self) -> str:
        return (f"{len(self.corpus)} passages; questions train {len(self.train)}, dev {len(self.dev)}, "
                f"test {len(self.test)}; reader-only {len(self.reader)}")


def _resolve(path: str, base: Path | None, key: str) -> Path:
    """`path` (the value of config key `key`) against `base`; a missing file names the command that fetches it."""
    p = Path(path).expanduser()
    p = p if p.is_absolute() or base is None else (base / p)
    if not p.exists():
        hint = fetch_hint(p)
        raise DataFormatError(p, None, None, f"file not found (`{key}`)" + (f"; {hint}" if hint else ""))
    return p


def _cap(examples: list[QAExample], limit: int | None, seed: int) -> list[QAExample]:
    if limit is None or len(examples) <= limit:
        return examples
    return random.Random(seed).sample(examples, limit)


def sample_qids(examples: list[QAExample], n: int | None, seed: int) -> frozenset[str] | None:
    """Ids of a seeded sample of `n` examples (None: all, returned as None); the same for every run of a split."""
    if n is None or n >= len(examples):
        return None
    return frozenset(random.Random(seed).sample([ex.qid for ex in examples], n))


def _synthetic_kb(cfg: DataConfig):
    s = cfg.synthetic
    return make_synthetic_kb(s.num_entities, s.num_reader_entities, s.attributes_per_entity, s.seed, twins=s.twins,
                             filler_sentences=s.filler_sentences, distractor_passages=s.distractor_passages)


def _squad(cfg: DataConfig, base_dir: Path | None) -> tuple[list[QAExample], list[Passage]]:
    """A SQuAD-layout file: a passage per paragraph, or per `chunk_words` words of it."""
    path = _resolve(cfg.qa_path, base_dir, "data.qa_path")
    return load_squad(path) if cfg.chunk_words is None else load_squad_chunked(path, cfg.chunk_words)


def load_corpus_of(cfg: DataConfig, base_dir: Path | None = None) -> tuple[list[Passage], str]:
    """Only the passages `cfg` names (no questions, no splits), and where they came from: what inference needs.

    Args:
        cfg: the data config.
        base_dir: folder that relative paths in `cfg` are resolved against (the current directory when None).
    """
    if cfg.source == "synthetic":
        return _synthetic_kb(cfg).corpus, "the synthetic knowledge base"
    if cfg.source == "squad":
        return _squad(cfg, base_dir)[1], str(_resolve(cfg.qa_path, base_dir, "data.qa_path"))
    path = _resolve(cfg.corpus_path, base_dir, "data.corpus_path")
    return _corpus(cfg, path), str(path)


def _corpus(cfg: DataConfig, path: Path) -> Sequence[Passage]:
    """A `files` corpus: memory-mapped (data.mmap_corpus) or a list."""
    return open_mapped(path, cfg.corpus_format) if cfg.mmap_corpus else load_corpus(path, cfg.corpus_format)


def load_data(cfg: DataConfig, base_dir: Path | None = None) -> RagData:
    """Load or generate the run's data.

    Args:
        cfg: the data config.
        base_dir: folder that relative paths in `cfg` are resolved against (the current directory when None).
    """
    if cfg.source == "synthetic":
        kb = _synthetic_kb(cfg)
        data = RagData(kb.corpus, kb.train, kb.dev, kb.test, kb.reader)
    elif cfg.source == "squad":
        questions, corpus = _squad(cfg, base_dir)
        train, dev, test = split_by_group(questions, tuple(cfg.split_fractions), seed=cfg.split_seed,
                                          unit=cfg.split_unit)
        # Reader-only examples: training questions with their gold paragraph ((context, query, response) pairs).
        data = RagData(corpus, train, dev, test, reader=[ex for ex in train if ex.context],
                       corpus_source=str(_resolve(cfg.qa_path, base_dir, "data.qa_path")))
    else:
        corpus = _corpus(cfg, _resolve(cfg.corpus_path, base_dir, "data.corpus_path"))
        questions = load_qa(_resolve(cfg.qa_path, base_dir, "data.qa_path"), cfg.qa_format)
        row_of = row_lookup(corpus)
        for ex in questions:
            missing = [pid for pid in ex.gold_pids if row_of(pid) is None]
            if missing:
                raise DataFormatError(cfg.qa_path, None, "gold_passage_ids",
                                      f"question {ex.qid} names passage id {missing[0]} not in {cfg.corpus_path}")
        if cfg.test_path:  # a separate test file (NQ-open's dev/test): split qa_path into train and dev only
            train_frac, dev_frac, _ = cfg.split_fractions
            train, dev, _ = split_by_group(questions, (train_frac / (train_frac + dev_frac),
                                                       dev_frac / (train_frac + dev_frac), 0.0), seed=cfg.split_seed,
                                           unit=cfg.split_unit)
            test = load_qa(_resolve(cfg.test_path, base_dir, "data.test_path"), cfg.qa_format)
        else:
            train, dev, test = split_by_group(questions, tuple(cfg.split_fractions), seed=cfg.split_seed,
                                              unit=cfg.split_unit)
        data = RagData(corpus, train, dev, test, reader=[ex for ex in train if ex.context],
                       corpus_source=str(_resolve(cfg.corpus_path, base_dir, "data.corpus_path")))
    data.dev = _cap(data.dev, cfg.max_eval_questions, cfg.split_seed)
    data.test = _cap(data.test, cfg.max_eval_questions, cfg.split_seed + 1)
    return data
