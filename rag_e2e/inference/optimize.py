"""Inference-time optimisations of a `RagPipeline`, each a flag measured against the plain path
(`python -m rag_e2e.benchmarks.inference`):

- `dtype`: a bf16/fp16 reader (for GPUs; fp16 is refused on CPU, where it is slow or unsupported). The towers stay
  float32: they are small beside the reader, and their vectors must match the float32 index;
- `int8`: dynamic int8 quantization of the reader's Linear layers (CPU: int8 weights, activations quantized per
  batch), with torch.ao's `quantize_dynamic`;
- `compile`: `torch.compile` of the reader's and the query tower's forward (dynamic shapes: questions and passages
  vary in length);
- a compressed or approximate index (IVF-PQ, HNSW) is chosen when loading: `RagPipeline.from_pretrained(dir,
  index_kind=...)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rag_e2e.inference.pipeline import RagPipeline

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Optimizations:
    dtype: str = "float32"
    int8: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if self.int8 and self.dtype != "float32":
            raise ValueError("int8 quantizes float32 weights: leave dtype=float32 with int8=true")

    @property
    def label(self) -> str:
        parts = ([self.dtype] if self.dtype != "float32" else []) + (["int8"] if self.int8 else []) + \
            (["compile"] if self.compile else [])
        return "+".join(parts) or "plain"


def optimize(pipeline: RagPipeline, opts: Optimizations) -> RagPipeline:
    """Apply `opts` to `pipeline` in place (and return it)."""
    device = pipeline.device
    if opts.dtype != "float32":
        if opts.dtype == "float16" and device.type == "cpu":
            raise ValueError("dtype=float16 is for GPUs; on CPU use bfloat16 or int8")
        pipeline.reader.model.to(_DTYPES[opts.dtype])
    if opts.int8:
        if device.type != "cpu":
            raise ValueError("int8 dynamic quantization runs on CPU; on a GPU use dtype=bfloat16")
        quantize_reader_int8(pipeline)
    if opts.compile:
        for module in (pipeline.reader.model, pipeline.encoder.query_model):
            module.forward = torch.compile(module.forward, dynamic=True)
    return pipeline


def quantize_reader_int8(pipeline: RagPipeline) -> None:
    """Swap the reader's nn.Linear layers for dynamically quantized int8 ones, in place."""
    from torch.ao.quantization import quantize_dynamic

    model = pipeline.reader.model
    quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
