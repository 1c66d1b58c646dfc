"""Shared builders for tests: tiny configs that run in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

from rag_e2e.compose import compose
from rag_e2e.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SQUAD_DEV = SHARED_DATA / "squad-v1.1-dev" / "dev-v1.1.json.zip"

TINY = [
    "data.synthetic.num_entities=40",
    "data.synthetic.num_reader_entities=20",
    "data.batch_size=4",
    "data.eval_batch_size=16",
    "encoder.hidden_size=32",
    "encoder.intermediate_size=64",
    "generator.d_model=32",
    "generator.ffn_dim=64",
    "generator.num_layers=1",
    "retriever.k=3",
    "eval.ks=[1,5]",
    "eval.max_new_tokens=6",
    "logger.wandb=false",
]


def tiny_config(*overrides: str, output_dir: Path | None = None) -> RunConfig:
    """The default experiment shrunk to tiny random models and a 40-passage knowledge base."""
    extra = [f"output_dir={output_dir}"] if output_dir is not None else []
    return compose([*TINY, *extra, *overrides])


def assert_data_error(exc, path: Path, line: int | None, field: str | None, text: str) -> None:
    """A DataFormatError names file, line and field, both as attributes and in its one-line message."""
    err = exc.value
    assert (err.path, err.line, err.field) == (str(path), line, field)
    msg = str(err)
    assert msg.startswith(f"{path}:{line}:" if line is not None else f"{path}:")
    if field is not None:
        assert f"field '{field}'" in msg
    assert text in msg


def assemble_with_index(*overrides: str):
    """`assemble` a tiny config and build its initial index (the callback would, when a Trainer starts)."""
    from rag_e2e.train import assemble

    parts = assemble(tiny_config(*overrides), progress=False)
    index, _ = parts.refresh.builder.build(parts.module.rag.encoder)
    parts.module.swap_index(index)
    return parts
