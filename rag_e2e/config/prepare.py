"""`rag-e2e prepare`'s options: raw documents -> a passage corpus."""

from __future__ import annotations

from dataclasses import dataclass

from rag_e2e.config.checks import _check
from rag_e2e.errors import ConfigError


@dataclass
class PrepareConfig:
    """`rag-e2e prepare <inputs...> out=DIR [key=value...]`; the keys are the field names."""

    out: str | None = None  # output folder: passages.parquet, stats.json, qa.jsonl, .shards/, manifest.jsonl
    tokenizer: str = "minilm"  # the passage encoder's tokenizer (HF name, folder or "minilm"); sizes are its tokens
    chunk_tokens: int = 100  # most text tokens per passage (no special tokens; the title is not counted)
    overlap: int = 20  # tokens consecutive passages of a document may share (whole sentences only)
    near_dup_threshold: float = 0.8  # MinHash Jaccard (word 5-grams) at or above which a document is dropped
    minhash_perm: int = 128  # MinHash permutations (more: finer Jaccard estimates, more memory per document)
    qa: str | None = None  # SQuAD-format JSON over the same documents: writes qa.jsonl with gold passage ids
    strict: bool = False  # a damaged file or record stops the run (DataFormatError) instead of being skipped
    progress: bool = True  # a progress bar (rag_e2e.console.progress_bar)

    def __post_init__(self) -> None:
        _check(bool(self.out), "rag-e2e prepare needs `out=<dir>` (the output folder)")
        _check(self.chunk_tokens >= 8, f"set `chunk_tokens` >= 8 (got {self.chunk_tokens})")
        _check(0 <= self.overlap < self.chunk_tokens,
               f"set `overlap` >= 0 and < `chunk_tokens` (got overlap={self.overlap}, "
               f"chunk_tokens={self.chunk_tokens})")
        _check(0 < self.near_dup_threshold <= 1, f"set `near_dup_threshold` in (0, 1] (got {self.near_dup_threshold})")
        _check(self.minhash_perm >= 16, f"set `minhash_perm` >= 16 (got {self.minhash_perm})")

    @classmethod
    def from_options(cls, options: dict[str, str]) -> PrepareConfig:
        """Build from `key=value` strings, converting each to its field's type.

        Raises:
            ConfigError: an unknown key or a value of the wrong type, naming the key.
        """
        kinds = {"chunk_tokens": int, "overlap": int, "minhash_perm": int, "near_dup_threshold": float,
                 "strict": bool, "progress": bool}
        known = tuple(cls.__dataclass_fields__)
        values: dict[str, object] = {}
        for key, text in options.items():
            _check(key in known, f"rag-e2e prepare: unknown option `{key}` (options: {', '.join(known)})")
            kind = kinds.get(key, str)
            if kind is bool:
                _check(text.lower() in ("true", "false", "1", "0", "yes", "no"),
                       f"set `{key}` to true or false (got {text!r})")
                values[key] = text.lower() in ("true", "1", "yes")
                continue
            try:
                values[key] = kind(text)
            except ValueError:
                expected = "an integer" if kind is int else "a number"
                raise ConfigError(f"set `{key}` to {expected} (got {text!r})") from None
        return cls(**values)
