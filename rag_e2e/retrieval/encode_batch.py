"""How many passages a refresh encodes per forward pass, measured on this machine (`retriever.encode_batch_size=0`).

Bigger batches multiply bigger matrices but pad every passage to the batch's longest, and where the balance lies
depends on the tower, the passage lengths and the device: a 2-core CPU is often fastest at 16-32, a GPU at 256+. So,
as for the exact search's backend (`kernels/_autotune.py`), the first build times each candidate on the same probe
of real passages and the fastest is kept per host (`rag_e2e.tuning`: `$RAG_E2E_CACHE/tuning/encode_batch_size.json`).
"""

from __future__ import annotations

import time

import torch
from transformers import PreTrainedTokenizerBase

from rag_e2e.data.types import Passage
from rag_e2e.retrieval.encoders import BiEncoder, eval_mode, tokenize_passages
from rag_e2e.tuning import measured_choice

CPU_CANDIDATES = (8, 16, 32, 64, 128)
GPU_CANDIDATES = (64, 128, 256, 512, 1024)


def probe_rows(corpus: list[Passage], n: int) -> list[Passage]:
    """`n` passages spread evenly over the corpus (so their lengths are typical of it, not of its first article)."""
    step = max(1, len(corpus) // n)
    return corpus[::step][:n]


def candidates_for(device: torch.device, corpus_size: int) -> list[int]:
    """The batch sizes worth timing: the device's list, capped at the corpus size."""
    sizes = GPU_CANDIDATES if device.type == "cuda" else CPU_CANDIDATES
    return [s for s in sizes if s <= corpus_size] or [corpus_size]


@torch.no_grad()
def seconds_per_candidate(encoder: BiEncoder, tokenizer: PreTrainedTokenizerBase, rows: list[Passage],
                          max_length: int, sizes: list[int]) -> dict[str, float]:
    """Seconds to encode all of `rows` in batches of each size (tokenized beforehand, untimed), after one warm-up."""
    model = encoder.passage_model
    device = next(model.parameters()).device

    def batches(size: int) -> list[dict[str, torch.Tensor]]:
        return [tokenize_passages(tokenizer, rows[i : i + size], max_length, device) for i in range(0, len(rows), size)]

    def encode(tokens: list[dict[str, torch.Tensor]]) -> None:
        for tok in tokens:
            encoder.encode_passage(tok["input_ids"], tok["attention_mask"])
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    seconds = {}
    with eval_mode(model):
        encode(batches(sizes[0])[:1])  # warm-up: first-call allocations and kernel selection
        for size in sizes:
            tokens = batches(size)
            start = time.perf_counter()
            encode(tokens)
            seconds[str(size)] = time.perf_counter() - start
    return seconds


def measured_encode_batch_size(encoder: BiEncoder, tokenizer: PreTrainedTokenizerBase, corpus: list[Passage],
                               max_length: int) -> int:
    """The fastest passage-encoding batch size for this tower, passage length and device: remembered for this host,
    else measured now on `max(candidates)` passages of `corpus` (logged once)."""
    model = encoder.passage_model
    device = next(model.parameters()).device
    sizes = candidates_for(device, len(corpus))
    n_params = sum(p.numel() for p in model.parameters())
    key = (f"{type(model).__name__} {n_params / 1e6:.1f}M params, {max_length}-token passages, "
           f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}")
    rows = probe_rows(corpus, max(sizes))
    return int(measured_choice("encode_batch_size", key,
                               lambda: seconds_per_candidate(encoder, tokenizer, rows, max_length, sizes)))
