"""A trained RAG system for inference: retrieve -> read -> answer, saved to and loaded from one folder.

`RagPipeline.from_pretrained(dir)` needs nothing but the folder (no training data, no run directory, no hub):

    pipeline.json         PipelineSettings (retrieval, decoding, reader prompt) and the format version
    query_encoder/        HF `save_pretrained` of the query tower, and the tokenizer both towers read with
    passage_encoder/      the passage tower (absent with shared towers)
    generator/            the reader (LoRA merged into it) and its tokenizer
    generator_adapter/    only with `lora="adapter"`: the peft adapter, applied over generator/ on load
    passages.jsonl        the corpus (id, title, text), row order = index order
    index/                the passage index (`rag_e2e.retrieval.index.save_index`), one for the whole corpus
    config.yaml, metrics.json   the training run's resolved config and metrics, when exported from a run
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedTokenizerBase

from rag_e2e import atomic
from rag_e2e.data.corpus import load_corpus_jsonl
from rag_e2e.data.types import Passage
from rag_e2e.errors import ConfigError
from rag_e2e.inference.folder_guard import check_self_contained
from rag_e2e.models.causal_lm import PromptFormat
from rag_e2e.models.generator import wrap_reader
from rag_e2e.models.rag import RagModel
from rag_e2e.models.reader import MemoizedReader, Reader
from rag_e2e.retrieval.encoders import BiEncoder
from rag_e2e.retrieval.index import build_index, load_index, save_index
from rag_e2e.retrieval.index_base import Index
from rag_e2e.retrieval.index_io import IndexMeta, corpus_fingerprint, state_fingerprint

FORMAT_VERSION = 1
SETTINGS_FILE = "pipeline.json"


@dataclass
class PipelineSettings:
    """How the pipeline retrieves and answers; saved as pipeline.json (the training run's values by default)."""

    k: int = 5  # passages read per question (the reader marginalizes over them)
    temperature: float = 0.1  # doc prior = softmax(q·d / temperature)
    marginal: str = "sequence"  # RAG-Sequence or RAG-Token decoding
    decoding: str = "thorough"  # RAG-Sequence: thorough | fast
    num_beams: int = 1
    max_new_tokens: int = 16
    max_query_length: int = 64
    max_passage_length: int = 128
    max_source_length: int = 96
    max_target_length: int = 16
    rerank_candidates: int = 0  # > k: re-score this many index candidates with the passage tower, keep the best k
    closed_book: bool = False  # the reader reads the question alone (retrieval is still returned)
    pooling: str = "mean"
    shared_towers: bool = False
    prompt: dict = field(default_factory=lambda: dataclasses.asdict(PromptFormat()))  # causal-LM readers
    encode_batch_size: int = 64
    # AutoModel.from_pretrained keywords that rebuild the towers as trained (a BERT built without a pooler)
    encoder_kwargs: dict = field(default_factory=dict)


@dataclass
class Citation:
    """One passage the answer was read from."""

    rank: int  # 1 = best
    pid: str
    title: str
    text: str
    score: float  # q·d


@dataclass
class Answer:
    question: str
    answer: str
    passages: list[Citation]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class RagPipeline:
    """Question in, answer and cited passages out, over a trained retriever, index and reader.

    Runs in eval mode without gradient. Not thread-safe: a server serialises calls (see `rag_e2e.inference.serve`).
    """

    def __init__(self, encoder: BiEncoder, tokenizer: PreTrainedTokenizerBase, reader: Reader,
                 corpus: list[Passage], index: Index, settings: PipelineSettings):
        if isinstance(reader, MemoizedReader):  # the training-time cache would grow without bound when serving
            reader = reader.inner
        self.tokenizer, self.settings = tokenizer, settings
        s = settings
        self.rag = RagModel(encoder, reader, corpus, index, k=s.k, temperature=s.temperature,
                            max_source_length=s.max_source_length, max_target_length=s.max_target_length,
                            marginal=s.marginal, decoding=s.decoding, passage_tokenizer=tokenizer,
                            max_passage_length=s.max_passage_length, rerank_candidates=s.rerank_candidates,
                            closed_book=s.closed_book).eval()

    @property
    def encoder(self) -> BiEncoder:
        return self.rag.encoder

    @property
    def reader(self) -> Reader:
        return self.rag.reader

    @property
    def corpus(self) -> list[Passage]:
        return self.rag.corpus

    @property
    def index(self) -> Index:
        return self.rag.index

    @property
    def device(self) -> torch.device:
        return next(self.rag.generator.parameters()).device

    def to(self, device: str | torch.device) -> RagPipeline:
        self.rag.to(device)
        return self

    # ---- inference ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def ask(self, questions: str | list[str], k: int | None = None) -> list[Answer]:
        """Answers for `questions` (one string or a list), each read over its top `k` passages (default
        `settings.k`), with the passages cited best first."""
        questions = [questions] if isinstance(questions, str) else list(questions)
        k = self.settings.k if k is None else k
        if not 1 <= k <= self.index.size:
            raise ValueError(f"k must be in [1, {self.index.size}] (the corpus size), got {k}")
        if not questions:
            return []
        tok = self.tokenizer(questions, truncation=True, max_length=self.settings.max_query_length, padding=True,
                             return_tensors="pt").to(self.device)
        retrieved = self.rag.retrieve(tok["input_ids"], tok["attention_mask"], k, fresh=False)
        answers = self.rag.generate(questions, retrieved, self.settings.num_beams, self.settings.max_new_tokens)
        out = []
        for question, answer, rows, scores in zip(questions, answers, retrieved.rows.tolist(),
                                                  retrieved.doc_scores.tolist()):
            cited = [Citation(rank, self.corpus[row].pid, self.corpus[row].title, self.corpus[row].text,
                              round(score, 4)) for rank, (row, score) in enumerate(zip(rows, scores), start=1)]
            out.append(Answer(question, answer, cited))
        return out

    # ---- saving and loading -------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, *, lora: str = "merged", extra_files: dict[str, Path] | None = None,
                        ) -> Path:
        """Write the self-contained folder (module docstring) atomically: an interrupted save leaves nothing at `path`.

        Args:
            path: the folder; it must not exist yet.
            lora: a LoRA reader is saved "merged" (one plain model; the default) or as "adapter" (the base model in
                generator/ and the adapter in generator_adapter/).
            extra_files: name -> file copied into the folder (the run's config.yaml, metrics.json).
        """
        path = Path(path)
        if lora not in ("merged", "adapter"):
            raise ConfigError(f"lora must be 'merged' or 'adapter', got {lora!r}")
        if path.exists():
            raise ConfigError(f"{path} exists; export into a new folder")
        self.settings.encoder_kwargs = tower_kwargs(self.encoder.query_model)
        with atomic.directory(path) as tmp:
            enc = self.encoder
            enc.query_model.save_pretrained(tmp / "query_encoder")
            self.tokenizer.save_pretrained(tmp / "query_encoder")
            if not enc.shared:
                enc.passage_model.save_pretrained(tmp / "passage_encoder")
            self._save_reader(tmp, lora)
            atomic.write_text(tmp / "passages.jsonl", "".join(
                json.dumps({"id": p.pid, "title": p.title, "text": p.text}, ensure_ascii=False) + "\n"
                for p in self.corpus))
            meta = IndexMeta.for_index(self.index, corpus_fingerprint=corpus_fingerprint(self.corpus),
                                       encoder_fingerprint=state_fingerprint(enc.passage_model))
            save_index(self.index, tmp / "index", meta)
            for name, file in (extra_files or {}).items():
                atomic.write_text(tmp / name, Path(file).read_text())
            settings = {"format_version": FORMAT_VERSION, **dataclasses.asdict(self.settings)}
            atomic.write_text(tmp / SETTINGS_FILE, json.dumps(settings, indent=2, sort_keys=True) + "\n")
        return path

    def _save_reader(self, folder: Path, lora: str) -> None:
        model = self.reader.model
        is_peft = hasattr(model, "merge_and_unload")
        if is_peft and lora == "adapter":
            model.save_pretrained(folder / "generator_adapter")  # the adapter weights and adapter_config.json
            model.get_base_model().save_pretrained(folder / "generator")
        elif is_peft:
            copy.deepcopy(model).merge_and_unload().save_pretrained(folder / "generator")  # the live model stays
        else:
            model.save_pretrained(folder / "generator")
        self.reader.tokenizer.save_pretrained(folder / "generator")

    @classmethod
    def from_pretrained(cls, path: str | Path, *, index_kind: str | None = None, index_params: dict | None = None,
                        device: str | torch.device = "cpu") -> RagPipeline:
        """Load a folder written by `save_pretrained` (or `rag-e2e export`).

        Args:
            path: the folder.
            index_kind: rebuild the index from the saved vectors as this kind (e.g. "ivf_pq", "hnsw": a compressed
                or approximate index) instead of the saved one.
            index_params: `build_index` options for `index_kind`.
            device: where the towers and the reader run.

        Raises:
            ConfigError: the folder is not a pipeline, or was written by a newer format.
            IndexMismatchError: the index does not belong to these passages and this passage tower.
        """
        path = Path(path)
        settings_file = path / SETTINGS_FILE
        if not settings_file.is_file():
            raise ConfigError(f"{path}: not an exported pipeline ({SETTINGS_FILE} not found); make one with "
                              "`rag-e2e export <run dir> <out dir>`")
        check_self_contained(path)
        raw = _read_settings(settings_file)
        version = raw.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise ConfigError(f"{settings_file}: format_version {version}; this rag_e2e reads {FORMAT_VERSION}")
        try:
            settings = PipelineSettings(**raw)
        except TypeError as err:
            raise ConfigError(f"{settings_file}: {err}") from None
        tokenizer = AutoTokenizer.from_pretrained(path / "query_encoder")
        query_model = AutoModel.from_pretrained(path / "query_encoder", **settings.encoder_kwargs)
        passage_model = None if settings.shared_towers else AutoModel.from_pretrained(path / "passage_encoder",
                                                                                      **settings.encoder_kwargs)
        encoder = BiEncoder(query_model, pooling=settings.pooling, shared=settings.shared_towers,
                            passage_encoder=passage_model)
        reader = _load_reader(path, PromptFormat(**settings.prompt))
        corpus = load_corpus_jsonl(path / "passages.jsonl")
        index, _ = load_index(path / "index", corpus_fingerprint=corpus_fingerprint(corpus),
                              encoder_fingerprint=state_fingerprint(encoder.passage_model),
                              dim=encoder.query_model.config.hidden_size, mmap=False)
        if index_kind is not None and index_kind != index.kind:
            index = build_index(index_kind, index.p_reps, **(index_params or {}))
        return cls(encoder, tokenizer, reader, corpus, index, settings).to(device)


# The only `from_pretrained` keywords a pipeline.json may carry: anything else (trust_remote_code, cache_dir, ...)
# would let the folder's sender choose what code or files this machine loads.
ENCODER_KWARGS = {"add_pooling_layer": bool}


def _read_settings(settings_file: Path) -> dict:
    """pipeline.json as a dict, or one ConfigError naming the file (and the field) at fault."""
    try:
        raw = json.loads(settings_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{settings_file}: not valid JSON ({getattr(err, 'msg', err)}); the folder is damaged, "
                          "export it again") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{settings_file}: expected a JSON object, got {type(raw).__name__}")
    kwargs = raw.get("encoder_kwargs", {})
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{settings_file}: field 'encoder_kwargs' must be an object")
    for key, value in kwargs.items():
        if key not in ENCODER_KWARGS or not isinstance(value, ENCODER_KWARGS[key]):
            raise ConfigError(f"{settings_file}: field 'encoder_kwargs': {key}={json.dumps(value)} is not allowed "
                              f"(only {', '.join(f'{k} ({t.__name__})' for k, t in ENCODER_KWARGS.items())})")
    return raw


def tower_kwargs(model: torch.nn.Module) -> dict:
    """What `AutoModel.from_pretrained` needs to rebuild `model` with the same weights: a BERT made without its
    pooler (rag_e2e's random towers) would otherwise get a freshly initialised one, and another fingerprint."""
    return {"add_pooling_layer": False} if getattr(model, "pooler", True) is None else {}


def _load_reader(path: Path, prompt: PromptFormat) -> Reader:
    """generator/ (plus generator_adapter/ when saved as an adapter) behind the `Reader` protocol."""
    from transformers import AutoConfig

    folder = path / "generator"
    auto = AutoModelForSeq2SeqLM if AutoConfig.from_pretrained(folder).is_encoder_decoder else AutoModelForCausalLM
    model = auto.from_pretrained(folder)
    if (path / "generator_adapter").is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, path / "generator_adapter")
    model.requires_grad_(False)
    return wrap_reader(model, AutoTokenizer.from_pretrained(folder), prompt)
