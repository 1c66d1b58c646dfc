"""Inference optimisations: what each flag changes, and that answers survive it."""

import pytest
import torch
from helpers import tiny_config

from rag_e2e.inference.export import pipeline_from_config
from rag_e2e.inference.optimize import Optimizations, optimize

QUESTIONS = ["where was Timku Tukrol born?", "what is the name of the pet of Ferik Stenkrom?"]


def _linears(module):
    return [m for m in module.modules() if type(m) is torch.nn.Linear]


def test_int8_quantizes_every_reader_linear_and_keeps_retrieval():
    pipeline = pipeline_from_config(tiny_config())
    plain = pipeline.ask(QUESTIONS, k=3)
    assert _linears(pipeline.reader.model)
    optimize(pipeline, Optimizations(int8=True))
    assert not _linears(pipeline.reader.model)  # all swapped for dynamically quantized int8 ones
    quantized = [m for m in pipeline.reader.model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert quantized and all(m.weight().dtype == torch.qint8 for m in quantized)
    assert _linears(pipeline.encoder.query_model)  # the towers are untouched: retrieval is the same
    got = pipeline.ask(QUESTIONS, k=3)
    assert [[c.pid for c in a.passages] for a in got] == [[c.pid for c in a.passages] for a in plain]
    assert all(isinstance(a.answer, str) for a in got)


def test_bf16_reader_keeps_float32_towers():
    pipeline = optimize(pipeline_from_config(tiny_config()), Optimizations(dtype="bfloat16"))
    assert {p.dtype for p in pipeline.reader.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in pipeline.encoder.parameters()} == {torch.float32}
    assert len(pipeline.ask(QUESTIONS, k=2)) == 2


@pytest.mark.parametrize("kwargs, message", [({"dtype": "int4"}, "dtype must be one of"),
                                             ({"int8": True, "dtype": "bfloat16"}, "leave dtype=float32")])
def test_bad_combinations_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Optimizations(**kwargs)


def test_float16_is_refused_on_cpu():
    with pytest.raises(ValueError, match="float16 is for GPUs"):
        optimize(pipeline_from_config(tiny_config()), Optimizations(dtype="float16"))
