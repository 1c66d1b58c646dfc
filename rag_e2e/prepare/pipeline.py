"""`rag-e2e prepare`: raw files -> a passage corpus (`passages.parquet`), `stats.json`, and `qa.jsonl` when asked.

Two phases, so that a corpus larger than memory streams and a killed run resumes:
1. each input file is extracted, cleaned, chunked and signed (MinHash) into its own shards (`shards.py`), and a
   manifest line marks it finished (`manifest.py`); a finished, unchanged file is never read again;
2. the shards are read back one file at a time, in input order: duplicates are dropped (the first copy wins) and the
   kept documents' passages are appended to the Parquet corpus; the QA file, if any, is aligned to those passages.

A damaged file is reported by name on stderr and in stats.json, and skipped; `strict=true` stops at it instead.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rag_e2e.atomic import write_file, write_json
from rag_e2e.config import PrepareConfig
from rag_e2e.console import track
from rag_e2e.errors import ConfigError, DataFormatError
from rag_e2e.files import sha256_of
from rag_e2e.prepare.align import QARecord, gold_chunks, locate, read_qa
from rag_e2e.prepare.chunk import TokenCounter, chunk_spans
from rag_e2e.prepare.dedupe import Deduper, Duplicate, Signer, text_hash
from rag_e2e.prepare.extract import extract_file, file_format
from rag_e2e.prepare.manifest import FileEntry, Manifest
from rag_e2e.prepare.shards import ShardDoc, adopt_legacy_shards, has_shard, read_shard, write_shard

FORMAT_VERSION = 2  # of the shards; part of the manifest settings
CORPUS = "passages.parquet"
CORPUS_SCHEMA = pa.schema([("id", pa.string()), ("title", pa.string()), ("text", pa.string()),
                           ("doc_id", pa.string()), ("source", pa.string()), ("n_tokens", pa.int32())])
HISTOGRAM_BINS = 10  # token-length histogram over [0, chunk_tokens]
_WRITE_BATCH = 4096  # passages per Parquet write


def find_inputs(inputs: list[str | Path]) -> list[tuple[str, Path]]:
    """(key, path) of every supported file under the inputs, sorted by key.

    A folder is walked recursively, its files keyed by their path from the folder's parent ("docs/a/b.md"); a file
    given by name is keyed by its name. Files of other types inside folders are ignored.

    Raises:
        ConfigError: an input does not exist, a file given by name has an unsupported type, two inputs give the same
            key, or no supported file was found.
    """
    found: dict[str, Path] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = [(p.relative_to(path.parent).as_posix(), p) for p in path.rglob("*")
                     if p.is_file() and file_format(p) is not None and not p.name.startswith(".")]
        elif path.is_file():
            if file_format(path) is None:
                raise ConfigError(f"rag-e2e prepare: {path}: unsupported file type '{path.suffix}' "
                                  "(supported: .txt, .md, .html, .htm, .pdf, .jsonl)")
            files = [(path.name, path)]
        else:
            raise ConfigError(f"rag-e2e prepare: input {path} does not exist")
        for key, file in files:
            if key in found and found[key].resolve() != file.resolve():
                raise ConfigError(f"rag-e2e prepare: {found[key]} and {file} both map to '{key}'; "
                                  "give their folders instead, or rename one")
            found[key] = file
    if not found:
        where = ", ".join(map(str, inputs))
        raise ConfigError(f"rag-e2e prepare: no .txt, .md, .html, .pdf or .jsonl files under {where}")
    return sorted(found.items())


def prepare(inputs: list[str | Path], cfg: PrepareConfig) -> dict[str, Any]:
    """Run both phases into `cfg.out`; returns the stats also written to stats.json.

    Raises:
        ConfigError: bad inputs (see `find_inputs`), or `cfg.out` prepared with other settings.
        DataFormatError: with `strict=true`, the first damaged file or record; a malformed QA file always.
    """
    from rag_e2e.retrieval.encoders import load_tokenizer

    out = Path(cfg.out)
    files = find_inputs(inputs)
    qa = read_qa(cfg.qa) if cfg.qa else None  # a bad QA file fails before any work
    out.mkdir(parents=True, exist_ok=True)
    adopt_legacy_shards(out)
    counter = TokenCounter(load_tokenizer(cfg.tokenizer))
    signer = Signer(cfg.minhash_perm)
    settings = {"format_version": FORMAT_VERSION, "tokenizer": cfg.tokenizer, "chunk_tokens": cfg.chunk_tokens,
                "overlap": cfg.overlap, "minhash_perm": cfg.minhash_perm}
    manifest = Manifest(out, settings)
    resumed = 0
    for key, path in track(files, "extract", "files", enabled=cfg.progress):
        entry = manifest.finished(key, path)
        if entry is not None and ((entry.status == "skipped" and not cfg.strict) or has_shard(out, key)):
            resumed += 1
            continue
        manifest.record(_process_file(out, key, path, cfg, counter, signer))
    stats = _assemble(out, files, manifest, cfg, qa, signer.scheme)
    stats["files"]["resumed"] = resumed
    write_json(out / "stats.json", stats)
    return stats


def _process_file(out: Path, key: str, path: Path, cfg: PrepareConfig, counter: TokenCounter,
                  signer: Signer) -> FileEntry:
    """Extract, chunk and sign one file into its shards; a damaged file gives a "skipped" entry (or raises)."""
    stat = path.stat()
    entry = FileEntry(key=key, path=str(path.resolve()), size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                      sha256=sha256_of(path), status="done")
    try:
        extraction = extract_file(path, key)
    except DataFormatError as err:
        if cfg.strict:
            raise
        print(f"rag-e2e prepare: skipped {err}", file=sys.stderr)
        entry.status, entry.reason = "skipped", str(err)
        return entry
    if extraction.skipped:
        if cfg.strict:
            raise extraction.skipped[0]
        for err in extraction.skipped:
            print(f"rag-e2e prepare: skipped record {err}", file=sys.stderr)
    docs = [ShardDoc(d.doc_id, d.title, d.text, d.source, text_hash(d.text), signer.signature(d.text),
                     chunk_spans(d.text, counter, cfg.chunk_tokens, cfg.overlap)) for d in extraction.documents]
    write_shard(out, key, docs)
    entry.encoding, entry.documents = extraction.encoding, len(docs)
    entry.passages = sum(len(d.spans) for d in docs)
    entry.skipped_records = [str(err) for err in extraction.skipped]
    return entry


def _assemble(out: Path, files: list[tuple[str, Path]], manifest: Manifest, cfg: PrepareConfig,
              qa: list[QARecord] | None, scheme: str) -> dict[str, Any]:
    """Phase 2: dedupe in input order, write passages.parquet (and qa.jsonl, duplicates.jsonl); return the stats."""
    deduper = Deduper(cfg.near_dup_threshold, cfg.minhash_perm, scheme)  # the signatures' hashing scheme
    duplicates: list[Duplicate] = []
    lengths: list[int] = []
    documents = 0
    aligner = _Aligner(qa) if qa is not None else None
    done = [key for key, _ in files if manifest.entries[key].status == "done"]

    def write_corpus(tmp: Path) -> None:
        nonlocal documents
        batch: list[dict[str, Any]] = []
        with pq.ParquetWriter(tmp, CORPUS_SCHEMA) as writer:
            for key in track(done, "assemble", "files", enabled=cfg.progress):
                for doc in read_shard(out, key):
                    documents += 1
                    dup = deduper.offer(doc.doc_id, doc.text_hash, doc.signature)
                    if dup is not None:
                        duplicates.append(dup)
                        continue
                    if aligner is not None:
                        aligner.offer(doc)
                    for c, span in enumerate(doc.spans):
                        batch.append({"id": doc.passage_id(c), "title": doc.title,
                                      "text": doc.text[span.start:span.end], "doc_id": doc.doc_id,
                                      "source": doc.source, "n_tokens": span.n_tokens})
                        lengths.append(span.n_tokens)
                    if len(batch) >= _WRITE_BATCH:
                        writer.write_table(pa.Table.from_pylist(batch, schema=CORPUS_SCHEMA))
                        batch = []
            if batch:
                writer.write_table(pa.Table.from_pylist(batch, schema=CORPUS_SCHEMA))
        if not lengths:
            raise DataFormatError(out, None, None, "no passages: every input file was skipped or empty")

    write_file(out / CORPUS, write_corpus)
    write_file(out / "duplicates.jsonl", lambda tmp: tmp.write_text(
        "".join(json.dumps(asdict(d)) + "\n" for d in duplicates), encoding="utf-8"))
    stats = _stats(files, manifest, cfg, documents, duplicates, lengths)
    if aligner is not None:
        if aligner.pending:  # no document with the article's title: search every kept document
            for key in done:
                for doc in read_shard(out, key):
                    if doc.doc_id not in aligner.kept_docs:
                        continue
                    aligner.offer(doc, any_title=True)
        write_file(out / "qa.jsonl", aligner.write)
        stats["qa"] = aligner.stats(cfg.qa)
    return stats


class _Aligner:
    """Places each question's answer in the kept documents, as they stream past."""

    def __init__(self, records: list[QARecord]) -> None:
        self.records = records
        self.by_title: dict[str, list[QARecord]] = defaultdict(list)
        for r in records:
            self.by_title[r.title].append(r)
        self.gold: dict[str, tuple[str, list[str]]] = {}  # qid -> (doc id, gold passage ids)
        self.kept_docs: set[str] = set()

    @property
    def pending(self) -> list[QARecord]:
        return [r for r in self.records if r.qid not in self.gold]

    def offer(self, doc: ShardDoc, any_title: bool = False) -> None:
        self.kept_docs.add(doc.doc_id)
        candidates = self.pending if any_title else self.by_title.get(doc.title.casefold(), [])
        for r in candidates:
            if r.qid in self.gold:
                continue
            span = locate(r, doc.text)
            if span is not None:
                self.gold[r.qid] = (doc.doc_id, [doc.passage_id(c) for c in gold_chunks(doc.spans, *span)])

    def write(self, tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in self.records:
                if r.qid in self.gold:
                    doc_id, pids = self.gold[r.qid]
                    f.write(json.dumps({"id": r.qid, "question": r.question, "answers": list(r.answers),
                                        "gold_passage_ids": pids, "group": doc_id}) + "\n")

    def stats(self, path: str | None) -> dict[str, Any]:
        missing = self.pending
        if missing:
            print(f"rag-e2e prepare: {len(missing)} of {len(self.records)} questions of {path} could not be aligned "
                  f"(answer not found in any kept document; left out of qa.jsonl), e.g. {missing[0].qid}",
                  file=sys.stderr)
        return {"questions": len(self.records), "aligned": len(self.gold), "unaligned": len(missing),
                "unaligned_ids": [r.qid for r in missing[:100]]}


def _stats(files: list[tuple[str, Path]], manifest: Manifest, cfg: PrepareConfig, documents: int,
           duplicates: list[Duplicate], lengths: list[int]) -> dict[str, Any]:
    entries = [manifest.entries[key] for key, _ in files]
    width = cfg.chunk_tokens / HISTOGRAM_BINS
    bins = Counter(min(int(n / width), HISTOGRAM_BINS - 1) for n in lengths)
    kinds = Counter(d.kind for d in duplicates)
    return {
        "files": {"found": len(files), "done": sum(e.status == "done" for e in entries),
                  "skipped": [{"file": e.path, "reason": e.reason} for e in entries if e.status == "skipped"],
                  "skipped_records": sum(len(e.skipped_records) for e in entries)},
        "documents": documents,
        "documents_kept": documents - len(duplicates),
        "duplicates": {"exact": kinds["exact"], "near": kinds["near"]},
        "passages": len(lengths),
        "tokens": {"max": max(lengths), "mean": round(sum(lengths) / len(lengths), 2), "bound": cfg.chunk_tokens,
                   "histogram": [{"from": round(b * width, 1), "to": round((b + 1) * width, 1), "passages": bins[b]}
                                 for b in range(HISTOGRAM_BINS)]},
        "settings": {k: v for k, v in asdict(cfg).items() if k != "progress"},
    }
