"""A persistent, content-keyed store of a frozen reader's outputs, shared by every run, seed and process.

A frozen reader's answer log-likelihood for a (passage, question, answer) and its generation for a (passage,
question) never change, so a run only pays for rows no earlier run has read. Entries are keyed by a hash of the
reader's fingerprint (its weights, dtype, tokenizer, prompt format and class: `reader_fingerprint`) and the row's
content (title, passage, question, source length, answer tokens or decoding settings); a change to any of them is a
miss, never a stale hit. The store is one SQLite file per fingerprint under `$RAG_E2E_CACHE/reader_outputs/`:
concurrent runs (a joblib sweep) read and write it safely, and a killed run leaves only whole transactions.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rag_e2e.errors import RagE2EError


def _digest(parts: Iterable[bytes]) -> str:
    h = hashlib.blake2b(digest_size=20)
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))  # length-prefixed: no two sequences of parts hash alike
        h.update(part)
    return h.hexdigest()


def weights_digest(model: nn.Module) -> str:
    """A hash of every tensor of the model's state dict: name, dtype, shape and bytes (~1 s per GB)."""

    def parts():
        for name, tensor in model.state_dict().items():
            t = tensor.detach().cpu().contiguous()
            yield f"{name}:{t.dtype}:{tuple(t.shape)}".encode()
            yield t.view(torch.uint8).numpy().tobytes() if t.numel() else b""

    return _digest(parts())


def tokenizer_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of the tokenizer's full definition (a fast tokenizer's JSON; else its vocabulary and special tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return _digest([text.encode(), json.dumps(tokenizer.all_special_tokens).encode()])


def reader_fingerprint(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: object = None) -> str:
    """What a frozen reader's outputs depend on besides the row: weights, tokenizer, prompt format, reader class."""
    prompt_text = json.dumps(asdict(prompt), sort_keys=True) if is_dataclass(prompt) else repr(prompt)
    return _digest([weights_digest(model).encode(), tokenizer_digest(tokenizer).encode(), prompt_text.encode(),
                    type(model).__name__.encode()])


class ReaderStore:
    """SQLite tables `ll` (per-token answer log-likelihoods, float32 bytes) and `gen` (answer lists, JSON).

    Args:
        path: the database file (created with its folder if missing).
        fingerprint: the reader's `reader_fingerprint`, mixed into every key.
    """

    def __init__(self, path: Path, fingerprint: str):
        self.path, self.fingerprint = Path(path), fingerprint
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=120, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
            for table in ("ll", "gen"):
                self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
            self._db.commit()
        except sqlite3.DatabaseError as e:
            raise RagE2EError(f"{self.path}: reader output cache is unreadable ({e}); delete it, or set "
                              "`generator.cache_outputs=false`") from None

    def key(self, row: Sequence) -> str:
        """The store key of one row's content (any JSON-serialisable tuple)."""
        return _digest([self.fingerprint.encode(), json.dumps(list(row), ensure_ascii=False).encode()])

    def get(self, table: str, keys: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for start in range(0, len(keys), 500):  # SQLite's bound on host parameters
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            found.update(self._db.execute(f"SELECT key, value FROM {table} WHERE key IN ({marks})", chunk))
        return found

    def put(self, table: str, items: dict[str, bytes]) -> None:
        if items:
            with self._db:  # one transaction: all of these rows or none
                self._db.executemany(f"INSERT OR IGNORE INTO {table} (key, value) VALUES (?, ?)", items.items())

    def close(self) -> None:
        self._db.close()

    def __getstate__(self) -> dict:  # a spawned worker reopens the file rather than sharing the connection
        return {"path": self.path, "fingerprint": self.fingerprint}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["fingerprint"])


def encode_ll(values: torch.Tensor) -> bytes:
    return values.to(torch.float32).contiguous().numpy().tobytes()


def decode_ll(blob: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(blob), dtype=torch.float32)
