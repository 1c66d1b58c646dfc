"""The decoder-only reader: answer log-likelihoods against a float64 brute force, answer-only generation, the
prompt's truncation, KV-cached step decoding, and both RAG losses through it on tiny random GPT-2/Llama/Qwen2."""

import random

import pytest
import torch
from helpers import assemble_with_index

from rag_e2e.config import GeneratorConfig
from rag_e2e.models.causal_lm import CausalLMReader
from rag_e2e.models.generator import build_reader
from rag_e2e.models.reader import Pairs, answer_token_ll

ARCHS = ["gpt2", "llama", "qwen2"]
WORDS = "amber falcon oak river town stone north bright cedar harbor lantern meadow copper willow".split()


def _reader(arch: str) -> CausalLMReader:
    reader = build_reader(GeneratorConfig(arch=arch, d_model=32, num_layers=2, num_heads=4, ffn_dim=64,
                                          seed=random.randrange(1000)))
    reader.model.double().eval()
    return reader


def _random_pairs(rng: random.Random, n: int) -> tuple[Pairs, list[str]]:
    words = lambda lo, hi: " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))  # noqa: E731
    pairs = Pairs([words(1, 2) for _ in range(n)], [words(0, 30) for _ in range(n)], [words(2, 6) for _ in range(n)])
    return pairs, [words(1, 4) for _ in range(n)]


@pytest.mark.parametrize("arch", ARCHS)
def test_answer_log_likelihoods_equal_float64_brute_force(arch):
    """Padded, batched scoring == each row alone, unpadded, from its full-sequence logits (float64, atol 1e-9)."""
    reader, rng = _reader(arch), random.Random()
    pairs, answers = _random_pairs(rng, 6)
    labels = reader.answer_labels(answers, 8)
    got = answer_token_ll(reader, pairs, labels, 40)  # (N, T)
    for i in range(len(pairs)):
        prompt = reader.prompt_ids(pairs.titles[i], pairs.texts[i], pairs.questions[i], 40)
        answer = labels[i][labels[i] != -100].tolist()
        with torch.no_grad():
            logits = reader.model(input_ids=torch.tensor([prompt + answer])).logits[0].double()
        logp = torch.log_softmax(logits, -1)
        want = torch.stack([logp[len(prompt) - 1 + t, tok] for t, tok in enumerate(answer)])
        torch.testing.assert_close(got[i, : len(answer)].double(), want, rtol=0, atol=1e-9)
        assert (got[i, len(answer):] == 0).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_returns_the_answer_only_as_greedy_decoding_of_each_row_alone(arch):
    reader, rng = _reader(arch), random.Random()
    reader.prompt = type(reader.prompt)(answer_stop=None)  # compare the raw continuation
    pairs, _ = _random_pairs(rng, 4)
    got = reader.generate(pairs, 40, max_new_tokens=5)
    for i in range(len(pairs)):
        seq = reader.prompt_ids(pairs.titles[i], pairs.texts[i], pairs.questions[i], 40)
        new: list[int] = []
        with torch.no_grad():
            for _ in range(5):
                nxt = int(reader.model(input_ids=torch.tensor([seq + new])).logits[0, -1].argmax())
                new.append(nxt)
                if nxt in reader.stop_ids:
                    break
        assert got[i] == reader.tokenizer.decode(new, skip_special_tokens=True).strip()


@pytest.mark.parametrize("arch", ARCHS)
def test_step_decoder_with_kv_cache_equals_full_recompute(arch):
    reader, rng = _reader(arch), random.Random()
    pairs, _ = _random_pairs(rng, 3)
    decoder = reader.start_decoding(pairs, 40)
    tokens = torch.empty((3, 0), dtype=torch.long)
    last = None
    for _ in range(4):
        logp = decoder.step(last)  # (N, V)
        for i in range(3):
            seq = reader.prompt_ids(pairs.titles[i], pairs.texts[i], pairs.questions[i], 40) + tokens[i].tolist()
            with torch.no_grad():
                want = torch.log_softmax(reader.model(input_ids=torch.tensor([seq])).logits[0, -1].double(), -1)
            torch.testing.assert_close(logp[i].double(), want, rtol=0, atol=1e-5)  # the step decoder casts to fp32
        last = torch.randint(5, 100, (3,))
        tokens = torch.cat([tokens, last.unsqueeze(1)], 1)


def test_prompt_truncates_the_passage_never_the_question():
    reader = _reader("llama")
    question = "which town was the copper lantern made in"
    ids = reader.prompt_ids("Harbor", "stone " * 300, question, 48)
    text = reader.tokenizer.decode(ids)
    assert len(ids) == 48 and text.rstrip().endswith(f"question : {question} answer :")
    assert "passage : stone stone" in text and "title : harbor" in text
    closed = reader.tokenizer.decode(reader.prompt_ids("", "", question, 48))
    assert "passage" not in closed and closed.rstrip().endswith(f"question : {question} answer :")


def test_chat_template_wraps_the_prompt_where_the_tokenizer_has_one():
    reader = _reader("qwen2")
    reader.tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
                                      "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    chat = CausalLMReader(reader.model, reader.tokenizer)
    text = chat.tokenizer.decode(chat.prompt_ids("T", "some text", "why", 64))
    assert text.startswith("< | user | > title : t") and text.rstrip().endswith("< | assistant | >")
    plain = CausalLMReader(reader.model, reader.tokenizer, type(chat.prompt)(chat=False))
    assert "assistant" not in plain.tokenizer.decode(plain.prompt_ids("T", "some text", "why", 64))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("loss", ["sequence", "token"])
def test_both_rag_losses_train_the_query_encoder_through_a_causal_reader(arch, loss):
    parts = assemble_with_index(f"generator=tiny_{arch}", f"model.loss={loss}", "generator.d_model=32",
                                "generator.ffn_dim=64")
    batch = next(iter(parts.datamodule.train_dataloader()))
    batch = batch["rag"] if isinstance(batch, dict) else batch
    terms, out = parts.module.objective_terms(batch)
    nll, ret = terms.reader, out.retrieved
    assert nll.shape == (len(batch.examples),) and torch.isfinite(nll).all() and (nll > 0).all()
    terms.total.mean().backward()
    query = [p.grad for p in parts.module.rag.encoder.query_model.parameters() if p.grad is not None]
    assert query and sum(g.abs().sum().item() for g in query) > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in parts.module.rag.generator.parameters())
    parts.module.rag.eval()
    answers = parts.module.rag.generate(batch.questions, ret, max_new_tokens=3)
    assert len(answers) == len(batch.examples)
