"""`trainer.args`: any lightning.Trainer keyword rag_e2e does not set itself, checked before anything is built."""

from __future__ import annotations

import dataclasses
import difflib
import inspect

from rag_e2e.errors import ConfigError

# Set by `train.build_trainer` from other keys (or fixed there because training depends on them): refused in args.
OWNED = frozenset({
    "accelerator", "strategy", "devices", "num_nodes", "precision", "logger", "callbacks", "max_steps",
    "max_time", "val_check_interval", "check_val_every_n_epoch", "limit_val_batches", "num_sanity_val_steps",
    "log_every_n_steps", "accumulate_grad_batches", "gradient_clip_val", "enable_progress_bar",
    "enable_model_summary", "default_root_dir", "plugins", "use_distributed_sampler",
})


def trainer_keywords() -> set[str]:
    import lightning as L

    return {name for name in inspect.signature(L.Trainer.__init__).parameters if name != "self"}


def check_trainer_args(args: dict) -> None:
    """Raise one ConfigError for the first key of `args` that is not a Trainer keyword, or is one rag_e2e sets."""
    known = trainer_keywords()
    for key in args:
        if key in OWNED:
            top = f"`trainer.{key}`" if key in _config_keys() else "rag_e2e itself"
            raise ConfigError(f"`trainer.args.{key}` is set by {top}; remove it from trainer.args")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            raise ConfigError(f"`trainer.args.{key}` is not a lightning.Trainer argument{hint}")


def _config_keys() -> set[str]:
    """The owned keys a `trainer.*` key of the run config sets (its other keys are rag_e2e's own)."""
    from rag_e2e.config import TrainerConfig

    return {f.name for f in dataclasses.fields(TrainerConfig)} & OWNED
