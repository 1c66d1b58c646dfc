"""rag_e2e.losses against transformers' RAG heads and a float64 brute-force reference. Fresh random inputs."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    DPRConfig,
    DPRQuestionEncoder,
    RagConfig,
    RagSequenceForGeneration,
    RagTokenForGeneration,
)

from rag_e2e.losses import doc_log_prior, rag_sequence_nll, rag_token_nll

BOS, PAD, EOS, N_SPECIAL = 0, 1, 2, 3
VOCAB = 64
HF_ATOL = 1e-5  # float64 models; observed differences are ≤ 1e-14
REF_ATOL = 1e-9  # float64 brute force vs logsumexp


def _tiny_rag(cls: type, n_docs: int, epsilon: float):
    """A random float64 RAG head built from configs only (no downloads); the retriever is bypassed."""
    common = dict(vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=PAD)
    layers = dict(encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2)
    ffn = dict(d_model=16, encoder_ffn_dim=32, decoder_ffn_dim=32)
    special = dict(bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=EOS)
    generator = BartForConditionalGeneration(BartConfig(**common, **layers, **ffn, **special))
    question_encoder = DPRQuestionEncoder(
        DPRConfig(**common, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    config = RagConfig.from_question_encoder_generator_configs(
        question_encoder.config, generator.config, n_docs=n_docs, label_smoothing=epsilon
    )
    return cls(config=config, question_encoder=question_encoder, generator=generator).double().eval()


def _hf_labels(batch: int, tgt_len: int, prefix: list[int]) -> torch.Tensor:
    """(B, T) rows ``prefix + body + [eos] + pad…`` with random body lengths ≥ 1; row 0 full, row -1 shortest."""
    body_max = tgt_len - len(prefix) - 1
    lengths = torch.randint(1, body_max + 1, (batch,))
    lengths[0], lengths[-1] = body_max, 1
    labels = torch.full((batch, tgt_len), PAD)
    for b, n in enumerate(lengths.tolist()):
        row = prefix + torch.randint(N_SPECIAL, VOCAB, (n,)).tolist() + [EOS]
        labels[b, : len(row)] = torch.tensor(row)
    return labels


def _to_ours(hf_labels: torch.Tensor, exclude_bos: bool) -> torch.Tensor:
    """Map HF's ``labels`` (also its decoder inputs) to ours: ``labels[:, t]`` is what logits[:, t] predict.

    HF scores ``target = cat(hf_labels[:, 1:], pad)`` against ``logits[:, t]`` and zeroes positions where the target
    is ``pad_token_id``; hf_labels[:, 0] is only ever a decoder input. With ``exclude_bos_score`` (RAG-Sequence) and
    every target[:, 0] == bos, position 0 is also dropped from the nll (HF still counts it in the smoothing term, so
    that case is only compared at ε = 0).
    """
    ours = torch.cat([hf_labels[:, 1:], torch.full_like(hf_labels[:, :1], PAD)], dim=1)
    ours = ours.masked_fill(ours.eq(PAD), -100)
    if exclude_bos:
        assert ours[:, 0].eq(BOS).all()
        ours[:, 0] = -100
    return ours


@pytest.mark.parametrize("n_docs", [1, 3])
@pytest.mark.parametrize("epsilon", [0.0, 0.1])
@pytest.mark.parametrize(
    ("cls", "loss_fn", "exclude_bos"),
    [
        (RagSequenceForGeneration, rag_sequence_nll, False),
        (RagSequenceForGeneration, rag_sequence_nll, True),
        (RagTokenForGeneration, rag_token_nll, False),
    ],
    ids=["sequence", "sequence-exclude-bos", "token"],
)
def test_matches_transformers(cls, loss_fn, exclude_bos, epsilon, n_docs):
    if exclude_bos and epsilon:
        pytest.skip("HF drops bos from the nll but not from its smoothing term; ours drops it from both")
    batch, tgt_len, ctx_len = 3, 8, 10
    model = _tiny_rag(cls, n_docs, epsilon)
    # HF's RAG-Sequence adds log p(z|x) at target position 1 and then zeroes pad positions, so a target with < 2
    # scored positions would lose its prior; prefixes are chosen so position 1 is always a real token.
    hf_labels = _hf_labels(batch, tgt_len, prefix=[EOS, BOS] if exclude_bos else [BOS])
    ctx_lengths = torch.randint(2, ctx_len + 1, (batch * n_docs,))
    ctx_mask = (torch.arange(ctx_len) < ctx_lengths[:, None]).long()
    ctx_ids = torch.randint(N_SPECIAL, VOCAB, (batch * n_docs, ctx_len)).masked_fill(ctx_mask.eq(0), PAD)
    doc_scores = torch.randn(batch, n_docs, dtype=torch.float64) * 3

    kwargs = dict(context_input_ids=ctx_ids, context_attention_mask=ctx_mask, doc_scores=doc_scores, n_docs=n_docs)
    if cls is RagSequenceForGeneration:
        kwargs["exclude_bos_score"] = exclude_bos
    with torch.no_grad():
        hf_loss = model(labels=hf_labels, reduce_loss=False, **kwargs).loss  # (B,)
        # HF feeds `labels` unshifted as decoder_input_ids, one copy per document (example-major).
        seq_logits = model.rag.generator(
            input_ids=ctx_ids, attention_mask=ctx_mask, decoder_input_ids=hf_labels.repeat_interleave(n_docs, 0)
        ).logits  # (B*n_docs, T, V)
    ours = loss_fn(seq_logits, doc_scores, _to_ours(hf_labels, exclude_bos), n_docs, epsilon=epsilon)
    assert hf_loss.shape == ours.shape == (batch,)
    torch.testing.assert_close(ours, hf_loss, rtol=0, atol=HF_ATOL)


def _random_case(batch=2, n_docs=3, tgt_len=4, vocab=5, requires_grad=False):
    seq_logits = torch.randn(batch * n_docs, tgt_len, vocab, dtype=torch.float64) * 2
    doc_scores = (torch.randn(batch, n_docs, dtype=torch.float64) * 2).requires_grad_(requires_grad)
    labels = torch.randint(0, vocab, (batch, tgt_len))
    labels[0, -1] = labels[-1, 0] = -100  # ignored positions, not only at the end
    return seq_logits, doc_scores, labels, n_docs


def test_brute_force_reference():
    seq_logits, doc_scores, labels, n_docs = _random_case()
    batch, tgt_len = labels.shape
    p_doc = doc_scores.exp() / doc_scores.exp().sum(-1, keepdim=True)  # (B, n_docs)
    probs = seq_logits.exp() / seq_logits.exp().sum(-1, keepdim=True)  # (B*n_docs, T, V)
    for b in range(batch):
        p_seq, p_tok = 0.0, 1.0
        for z in range(n_docs):
            p_y = 1.0
            for t in range(tgt_len):
                if labels[b, t] != -100:
                    p_y *= probs[b * n_docs + z, t, labels[b, t]].item()
            p_seq += p_doc[b, z].item() * p_y
        for t in range(tgt_len):
            if labels[b, t] != -100:
                p_tok *= sum(p_doc[b, z].item() * probs[b * n_docs + z, t, labels[b, t]].item() for z in range(n_docs))
        seq = rag_sequence_nll(seq_logits, doc_scores, labels, n_docs)[b].item()
        tok = rag_token_nll(seq_logits, doc_scores, labels, n_docs)[b].item()
        assert seq == pytest.approx(-math.log(p_seq), rel=0, abs=REF_ATOL)
        assert tok == pytest.approx(-math.log(p_tok), rel=0, abs=REF_ATOL)


@pytest.mark.parametrize("loss_fn", [rag_sequence_nll, rag_token_nll])
def test_gradient_reaches_doc_scores(loss_fn):
    seq_logits, doc_scores, labels, n_docs = _random_case(requires_grad=True)
    loss_fn(seq_logits, doc_scores, labels, n_docs).sum().backward()
    assert doc_scores.grad.abs().min() > 0

    # Identical documents: p(y|x) = Σ_z p(z|x)·c = c whatever the prior, so the prior gets no gradient.
    doc_scores.grad = None
    same = seq_logits[:1].expand_as(seq_logits).contiguous()
    loss_fn(same, doc_scores, labels, n_docs).sum().backward()
    torch.testing.assert_close(doc_scores.grad, torch.zeros_like(doc_scores), rtol=0, atol=1e-12)


@pytest.mark.parametrize("loss_fn", [rag_sequence_nll, rag_token_nll])
@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_temperature_scales_scores(loss_fn, epsilon):
    seq_logits, doc_scores, labels, n_docs = _random_case()
    temperature = 0.37
    torch.testing.assert_close(
        loss_fn(seq_logits, doc_scores, labels, n_docs, temperature=temperature, epsilon=epsilon),
        loss_fn(seq_logits, doc_scores / temperature, labels, n_docs, epsilon=epsilon),
        rtol=0,
        atol=1e-12,
    )
    torch.testing.assert_close(doc_log_prior(doc_scores, temperature), torch.log_softmax(doc_scores / temperature, -1))
