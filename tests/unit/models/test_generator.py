"""Seq2seq reader inputs/targets, and each supported architecture through the reader factory."""

import pytest
import torch

from rag_e2e.config import GeneratorConfig, LoraConfig
from rag_e2e.models.causal_lm import CausalLMReader
from rag_e2e.models.generator import build_reader
from rag_e2e.models.reader import MemoizedReader, Pairs, answer_token_ll
from rag_e2e.models.seq2seq import Seq2SeqReader, encode_answers, encode_sources, shift_right

TINY = dict(d_model=32, num_layers=1, num_heads=2, ffn_dim=64)


def test_shift_right_starts_with_start_token_and_pads_ignored_positions():
    labels = torch.tensor([[5, 6, 7], [8, 2, -100]])
    assert shift_right(labels, start=1, pad_id=0).tolist() == [[1, 5, 6], [1, 8, 2]]


@pytest.fixture(scope="module")
def bart():
    return build_reader(GeneratorConfig(arch="bart", **TINY))


def test_answers_end_with_eos_and_pad_with_ignore_index(bart):
    tok = bart.tokenizer
    labels = encode_answers(tok, ["Amber Falcon", "oak"], max_length=8)
    assert labels.shape[0] == 2 and labels[1, -1] == -100
    assert bart.decode(labels.clamp_min(0)) == ["amber falcon", "oak"]
    assert labels[0, 2] == tok.sep_token_id  # [SEP] ends a WordPiece answer


def test_long_passage_is_truncated_never_the_question(bart):
    tok = bart.tokenizer
    enc = encode_sources(tok, ["Title"], ["word " * 500], ["where was Tovarin Beskal born?"], max_length=40)
    text = tok.decode(enc["input_ids"][0])
    assert enc["input_ids"].shape[1] == 40 and text.rstrip(" [SEP]").endswith("where was tovarin beskal born?")
    assert text.startswith("[CLS] title / word")


@pytest.mark.parametrize("arch", ["bart", "t5", "bert2bert", "gpt2", "llama", "qwen2"])
def test_each_architecture_scores_and_generates_behind_one_interface(arch):
    reader = build_reader(GeneratorConfig(arch=arch, warm_start="minilm" if arch == "bert2bert" else None, **TINY))
    assert isinstance(reader, Seq2SeqReader if arch in ("bart", "t5", "bert2bert") else CausalLMReader)
    pairs = Pairs(["T", "U"], ["Amber Falcon is the town.", "Oak."], ["where?", "what tree is it?"])
    labels = reader.answer_labels(["Amber Falcon", "oak"], 8)
    logits = reader.answer_logits(pairs, labels, 32)
    assert logits.shape[:2] == labels.shape and torch.isfinite(logits).all()
    ll = answer_token_ll(reader, pairs, labels, 32)
    assert ll.shape == labels.shape and (ll[labels == -100] == 0).all() and (ll[labels != -100] < 0).all()
    answers = reader.generate(pairs, 32, max_new_tokens=3)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_frozen_reader_is_memoized_and_matches_the_plain_one():
    cfg = GeneratorConfig(arch="llama", train=False, **TINY)
    memo, plain = build_reader(cfg), build_reader(GeneratorConfig(arch="llama", **TINY)).model.eval()
    assert isinstance(memo, MemoizedReader) and not any(p.requires_grad for p in memo.model.parameters())
    pairs = Pairs(["T", "U", "T"], ["a b c", "d e", "a b c"], ["q1", "q2", "q1"])
    labels = memo.answer_labels(["x y", "z", "x y"], 8)
    first = memo.answer_token_ll(pairs, labels, 32)
    assert memo.misses == 2 and memo.hits == 1  # rows 0 and 2 are the same (pair, answer)
    again = memo.answer_token_ll(pairs, labels, 32)
    assert memo.misses == 2 and memo.hits == 4 and torch.equal(first, again)
    memo.inner.model = plain  # same seed, same weights: the memo holds what the reader computes
    with torch.no_grad():
        torch.testing.assert_close(first, answer_token_ll(memo.inner, pairs, labels, 32), rtol=0, atol=1e-6)


def test_bf16_weights_and_gradient_checkpointing_with_lora_train_the_adapters():
    reader = build_reader(GeneratorConfig(arch="llama", dtype="bfloat16", gradient_checkpointing=True,
                                          lora=LoraConfig(r=4), **TINY))
    base = [p for n, p in reader.model.named_parameters() if "lora_" not in n]
    assert base and all(p.dtype == torch.bfloat16 for p in base)  # peft keeps adapters in fp32
    reader.model.train()
    pairs = Pairs(["T"], ["Amber Falcon is the town."], ["where?"])
    ll = answer_token_ll(reader, pairs, reader.answer_labels(["Amber Falcon"], 8), 32)
    assert ll.dtype == torch.float32  # bf16 logits, softmax in fp32
    ll.sum().backward()
    grads = {n: p.grad for n, p in reader.model.named_parameters() if p.requires_grad}
    assert grads and all("lora_" in n and g is not None for n, g in grads.items())
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)  # B starts at 0, so A's grad is 0
