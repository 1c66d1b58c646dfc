"""The value checks every config dataclass runs in `__post_init__`: one ConfigError naming the key to change."""

from __future__ import annotations

from rag_e2e.errors import ConfigError

MAX_K = 128  # the most passages one search returns (kernels/topk.py's limit; a test keeps the two equal)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _one_of(value: str, options: tuple[str, ...], key: str) -> None:
    # Plain strings, not Literal: Hydra 1.3 pins OmegaConf < 2.4, which has no Literal fields.
    _check(value in options, f"set `{key}` to one of {', '.join(options)} (got {value!r})")
