"""RAG decoding (rag_e2e.models.decoding): RAG-Sequence thorough against transformers' RagSequenceForGeneration,
fast against a brute-force evaluation of its approximation, RAG-Token beam search against enumeration, and the
readers' beam reordering against teacher forcing. Fresh random weights each test."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    DPRConfig,
    DPRQuestionEncoder,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    RagConfig,
    RagSequenceForGeneration,
)

from rag_e2e.benchmarks.decoding import CountingReader
from rag_e2e.models.causal_lm import CausalLMReader
from rag_e2e.models.decoding import sequence_decode, token_decode
from rag_e2e.models.reader import Pairs, answer_token_ll
from rag_e2e.models.seq2seq import Seq2SeqReader

WORDS = [f"w{i}" for i in range(24)]
PAD, BOS, EOS, UNK = 0, 1, 2, 3


def _word_tokenizer() -> PreTrainedTokenizerFast:
    """A whole-word vocabulary: decoding then re-encoding an answer gives back its ids exactly (as HF's id-level
    deduplication and our string-level one then agree)."""
    vocab = {"[PAD]": PAD, "[BOS]": BOS, "[EOS]": EOS, "[UNK]": UNK, "/": 4, "//": 5}
    vocab.update({w: len(vocab) for w in WORDS})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]",
                                   unk_token="[UNK]")


def _bart(tokenizer, eos_bias: float = 1.5) -> BartForConditionalGeneration:
    """A random float64 BART that ends answers after a few words and never emits pad/bos/unk (which a decoded
    string would lose)."""
    config = BartConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                        max_position_embeddings=64, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
                        decoder_start_token_id=BOS, forced_eos_token_id=None, forced_bos_token_id=None)
    model = BartForConditionalGeneration(config).double().eval()
    with torch.no_grad():
        model.final_logits_bias[0, [PAD, BOS, UNK, 4, 5]] = -1e4
        model.final_logits_bias[0, EOS] = eos_bias
    # Empty answers excluded: transformers' RAG-Sequence loss adds the doc prior at target position 1, which a
    # one-token target (eos alone) does not have.
    model.generation_config.min_new_tokens = 2
    model.generation_config.no_repeat_ngram_size = 0
    return model


def _pairs(batch: int, k: int, generator: torch.Generator) -> Pairs:
    def text(n):
        return " ".join(WORDS[i] for i in torch.randint(len(WORDS), (n,), generator=generator).tolist())

    return Pairs([text(1) for _ in range(batch * k)], [text(6) for _ in range(batch * k)],
                 [text(4) for _ in range(batch) for _ in range(k)])


@pytest.mark.parametrize("num_beams", [1, 3])
def test_thorough_equals_transformers_rag_sequence_generate(num_beams):
    batch, k, max_new = 4, 3, 5
    tokenizer = _word_tokenizer()
    generator = torch.Generator().manual_seed(int(torch.randint(1 << 30, ())))
    model = _bart(tokenizer)
    reader = Seq2SeqReader(model, tokenizer)
    pairs = _pairs(batch, k, generator)
    doc_scores = torch.randn(batch, k, dtype=torch.float64, generator=generator) * 2
    ours = sequence_decode(reader, pairs, torch.log_softmax(doc_scores, -1), decoding="thorough", num_beams=num_beams,
                           max_new_tokens=max_new, max_source_length=64, max_target_length=16)

    dpr = DPRConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, pad_token_id=PAD)
    config = RagConfig.from_question_encoder_generator_configs(dpr, model.config, n_docs=k)
    rag = RagSequenceForGeneration(config=config, question_encoder=DPRQuestionEncoder(dpr), generator=model).eval()
    src = reader.sources(pairs, 64)
    with torch.no_grad():
        out = rag.generate(context_input_ids=src["input_ids"], context_attention_mask=src["attention_mask"],
                           doc_scores=doc_scores, n_docs=k, num_beams=num_beams, max_new_tokens=max_new,
                           do_deduplication=True)
    theirs = [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
    assert ours == theirs


def test_fast_equals_a_brute_force_evaluation_of_its_approximation():
    batch, k, beams, max_new = 4, 3, 2, 5
    tokenizer = _word_tokenizer()
    generator = torch.Generator().manual_seed(int(torch.randint(1 << 30, ())))
    reader = CountingReader(Seq2SeqReader(_bart(tokenizer, eos_bias=2.5), tokenizer))
    pairs = _pairs(batch, k, generator)
    log_prior = torch.log_softmax(torch.randn(batch, k, dtype=torch.float64, generator=generator) * 2, -1)
    kwargs = dict(num_beams=beams, max_new_tokens=max_new, max_source_length=64, max_target_length=16)
    with torch.no_grad():
        fast = sequence_decode(reader, pairs, log_prior, decoding="fast", **kwargs)
        fast_rows, reader.rows = reader.rows, 0
        sequence_decode(reader, pairs, log_prior, decoding="thorough", **kwargs)
        thorough_rows = reader.rows

        proposals = reader.inner.generate(pairs, 64, num_beams=beams, max_new_tokens=max_new, num_return=beams)
        expected, candidates, own_pairs = [], 0, 0
        for b in range(batch):
            # p(y|x) ≈ Σ over the passages whose beams produced y of p(z|x)·p(y|x,z), each pair scored on its own
            own = {(z, y) for z in range(k) for y in proposals[(b * k + z) * beams : (b * k + z + 1) * beams]}
            cands = sorted({y for _, y in own})
            candidates, own_pairs = candidates + len(cands), own_pairs + len(own)
            prob = {y: 0.0 for y in cands}
            for z, y in own:
                row = pairs.select([b * k + z])
                ll = answer_token_ll(reader.inner, row, reader.inner.answer_labels([y], 16), 64).sum().item()
                prob[y] += math.exp(log_prior[b, z].item() + ll)
            expected.append(max(cands, key=lambda y: (prob[y], [-ord(c) for c in y])))
    assert fast == expected
    # fast scores each (passage, own proposal) pair once; thorough every candidate on every passage
    assert fast_rows == own_pairs <= batch * k * beams and thorough_rows == candidates * k >= own_pairs


def test_fast_and_thorough_agree_when_every_passage_proposes_the_same_answer():
    tokenizer = _word_tokenizer()
    model = _bart(tokenizer)
    reader = Seq2SeqReader(model, tokenizer)
    same = Pairs(["w1"] * 3, ["w2 w3 w4"] * 3, ["w5 w6"] * 3)
    log_prior = torch.log_softmax(torch.randn(1, 3, dtype=torch.float64), -1)
    kwargs = dict(num_beams=1, max_new_tokens=4, max_source_length=32, max_target_length=8)
    assert sequence_decode(reader, same, log_prior, decoding="fast", **kwargs) == \
        sequence_decode(reader, same, log_prior, decoding="thorough", **kwargs)


# ---- RAG-Token beam search ------------------------------------------------------------------------------------------
class _TableReader:
    """A fake reader over a 3-token vocabulary (0 = stop, 1, 2) whose next-token log-probs are a fixed random table
    of (row, prefix): small enough to enumerate every answer."""

    stop_ids, pad_id = (0,), 0

    def __init__(self, rows: int, max_len: int, generator: torch.Generator):
        prefixes = [p for n in range(max_len) for p in itertools.product((1, 2), repeat=n)]
        self.table = {(r, p): torch.log_softmax(torch.randn(3, dtype=torch.float64, generator=generator) * 2, -1)
                      for r in range(rows) for p in prefixes}

    def start_decoding(self, pairs, max_source_length):
        reader = self

        class Steps:
            def __init__(self):
                self.rows = list(range(len(pairs)))  # which passage row each decoder row reads
                self.prefix = [()] * len(pairs)

            def step(self, tokens):
                if tokens is not None:
                    self.prefix = [p + (t,) for p, t in zip(self.prefix, tokens.tolist())]
                return torch.stack([reader.table[(r, p)] for r, p in zip(self.rows, self.prefix)])

            def reorder(self, rows):
                self.rows = [self.rows[i] for i in rows.tolist()]
                self.prefix = [self.prefix[i] for i in rows.tolist()]

        return Steps()

    def decode(self, token_ids):
        return [" ".join(str(t) for t in row if t != 0) + ("." if 0 in row else "") for row in token_ids.tolist()]


def _marginal_score(reader: _TableReader, question: int, k: int, log_prior: torch.Tensor, seq: tuple) -> float:
    total = 0.0
    for t, tok in enumerate(seq):
        per_doc = [log_prior[question, z].item() + reader.table[(question * k + z, seq[:t])][tok].item()
                   for z in range(k)]
        total += math.log(sum(math.exp(v) for v in per_doc))
    return total


def test_token_beam_search_returns_the_top_marginal_sequence():
    batch, k, max_len = 3, 2, 3
    generator = torch.Generator().manual_seed(int(torch.randint(1 << 30, ())))
    reader = _TableReader(batch * k, max_len, generator)
    log_prior = torch.log_softmax(torch.randn(batch, k, dtype=torch.float64, generator=generator), -1)
    pairs = Pairs([""] * (batch * k), [""] * (batch * k), [""] * (batch * k))
    # Every answer: content tokens then stop, or max_len content tokens (cut by the length limit).
    answers = [p + (0,) for n in range(max_len) for p in itertools.product((1, 2), repeat=n)]
    answers += list(itertools.product((1, 2), repeat=max_len))
    expected = []
    for b in range(batch):
        best = max(answers, key=lambda seq: _marginal_score(reader, b, k, log_prior, seq))
        expected.append(reader.decode(torch.tensor([list(best) + [0] * (max_len + 1 - len(best))]))[0]
                        if 0 in best else reader.decode(torch.tensor([list(best)]))[0])
    # 4 beams hold every live prefix of length 2, so the search is exhaustive here
    got = token_decode(reader, pairs, log_prior, num_beams=4, max_new_tokens=max_len)
    assert got == expected


def _causal_reader(tokenizer) -> CausalLMReader:
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, tie_word_embeddings=True)
    return CausalLMReader(LlamaForCausalLM(config).double().eval(), tokenizer)


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_reordered_step_decoder_matches_teacher_forcing(family):
    # Decode two steps, shuffle and duplicate the rows (as beam search does), decode one more: each row's log-probs
    # equal a fresh teacher-forced pass over its own prefix.
    tokenizer = _word_tokenizer()
    reader = Seq2SeqReader(_bart(tokenizer), tokenizer) if family == "seq2seq" else _causal_reader(tokenizer)
    generator = torch.Generator().manual_seed(int(torch.randint(1 << 30, ())))
    pairs = _pairs(2, 2, generator)  # 4 rows of different lengths
    tokens = torch.randint(6, len(tokenizer), (4, 3), generator=generator)
    with torch.no_grad():
        steps = reader.start_decoding(pairs, 64)
        steps.step(None)
        steps.step(tokens[:, 0])
        rows = torch.tensor([2, 0, 0, 3, 1, 2])
        steps.reorder(rows)
        got = steps.step(tokens[rows, 1])  # (6, V): prediction of the 3rd token
        labels = torch.cat([tokens[rows, :2], torch.full((6, 1), EOS)], 1)  # position 2 predicts the 3rd token
        logits = reader.answer_logits(pairs.select(rows.tolist()), labels, 64)[:, 2]
    # the step decoder's log-softmax runs in float32 (as for bf16 readers): float32 rounding (the suppressed
    # tokens sit near -1e4)
    torch.testing.assert_close(got.double(), torch.log_softmax(logits.double(), -1), rtol=1e-6, atol=1e-5)
