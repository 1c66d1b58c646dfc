"""Where questions and passages come from: `data.*` (and the synthetic knowledge base, the data root)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rag_e2e.config.checks import _check, _one_of


@dataclass
class SyntheticConfig:
    """The built-in synthetic knowledge base (see rag_e2e/data/synthetic.py)."""

    num_entities: int = 200  # entities in the knowledge base
    num_reader_entities: int = 300  # extra entities, NOT in the KB, for the reader-only loss
    attributes_per_entity: int = 3  # one passage and one question per attribute; one per entity is held out
    twins: bool = False  # entities in pairs with the same name words swapped: only word order tells them apart
    filler_sentences: int = 0  # unrelated sentences appended to each KB passage (noise a fixed passage vector keeps)
    distractor_passages: int = 0  # passages about no entity appended to the corpus (scale; they answer nothing)
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.num_entities >= 10, "set `data.synthetic.num_entities` >= 10")
        _check(1 <= self.attributes_per_entity <= 4, "set `data.synthetic.attributes_per_entity` in [1, 4]")
        _check(self.num_reader_entities >= 0, "set `data.synthetic.num_reader_entities` >= 0")
        _check(self.distractor_passages >= 0, "set `data.synthetic.distractor_passages` >= 0")
        _check((self.num_entities + self.num_reader_entities) * self.attributes_per_entity <= 3416,
               "the synthetic KB has 3,416 distinct answers: lower `data.synthetic.num_entities`, "
               "`data.synthetic.num_reader_entities` or `data.synthetic.attributes_per_entity`")


# Where the public datasets live (`rag-e2e data get` writes there; configs name files under ${data.root})
DATA_ROOT_ENV = "RAG_E2E_DATA"
DATA_ROOT_DEFAULT = "data"


@dataclass
class DataConfig:
    """Where questions and passages come from, and how they are split and batched."""

    source: str = "synthetic"
    root: str = f"${{oc.env:{DATA_ROOT_ENV},{DATA_ROOT_DEFAULT}}}"  # the data root the dataset configs name files under
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    qa_path: str | None = None  # squad: the SQuAD JSON/zip (also the corpus); files: QA file for all splits
    qa_format: str = "auto"
    corpus_path: str | None = None  # files: DPR TSV, JSONL or Parquet (rag-e2e prepare) corpus
    prepared_dir: str | None = None  # data=prepared: the `out=` folder of rag-e2e prepare (sets the two paths)
    test_path: str | None = None  # files: a separate test QA file (qa_path is then split into train/dev only)
    corpus_format: str = "auto"
    # files: open the corpus as a memory-mapped Arrow copy (converted once into $RAG_E2E_CACHE/corpora/), shared by
    # ranks and workers, instead of a list of Passages in every process (rag_e2e/data/mapped.py)
    mmap_corpus: bool = False
    split_fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # train/dev/test, by group
    split_unit: str = "groups"  # what the fractions count: groups (articles), or questions (groups still whole)
    split_seed: int = 0
    # squad: cut each paragraph into passages of this many words, gold = the one holding the answer's start (long
    # articles, e.g. COVID-QA); null: one passage per paragraph
    chunk_words: int | None = None
    max_eval_questions: int | None = None  # cap dev/test size for quick runs
    batch_size: int = 16
    reader_batch_size: int = 32  # reader-only examples per step (when model.reader_loss_weight > 0)
    eval_batch_size: int = 32
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.prepared_dir:  # a `rag-e2e prepare` folder: its corpus and aligned questions, unless set apart
            self.corpus_path = self.corpus_path or str(Path(self.prepared_dir) / "passages.parquet")
            self.qa_path = self.qa_path or str(Path(self.prepared_dir) / "qa.jsonl")
        _one_of(self.source, ("synthetic", "squad", "files"), "data.source")
        _one_of(self.qa_format, ("auto", "squad", "nq_open", "jsonl"), "data.qa_format")
        _one_of(self.corpus_format, ("auto", "dpr_tsv", "jsonl", "parquet"), "data.corpus_format")
        _one_of(self.split_unit, ("groups", "questions"), "data.split_unit")
        _check(self.chunk_words is None or self.chunk_words >= 1, "set `data.chunk_words` >= 1 (or null)")
        _check(self.chunk_words is None or self.source == "squad",
               "`data.chunk_words` cuts SQuAD-layout articles (data.source=squad); unset it for "
               f"data.source={self.source}")
        _check(self.source == "synthetic" or self.qa_path is not None,
               f"set `data.qa_path` for data.source={self.source}"
               + (" (or `data.prepared_dir`, the out= folder of rag-e2e prepare)" if self.source == "files" else ""))
        _check(self.source != "files" or self.corpus_path is not None, "set `data.corpus_path` for data.source=files")
        _check(len(self.split_fractions) == 3 and abs(sum(self.split_fractions) - 1) < 1e-6,
               "set `data.split_fractions` to three numbers summing to 1 (train, dev, test)")
        _check(min(self.batch_size, self.eval_batch_size, self.reader_batch_size) >= 1,
               "set `data.batch_size`, `data.reader_batch_size` and `data.eval_batch_size` >= 1")
