"""The retriever-training objectives (rag_e2e.losses.OBJECTIVES): hand-computed values on a written-out case,
which side of the model each term trains, and the marginals' terms against the marginal losses. Float64.

The case: 2 questions, 3 passages, answers of 2 tokens, θ = 1.
    question 1: p_R = (1/2, 1/4, 1/4)  (doc scores ln 2, 0, 0); p(y_t|x,z) per token: z1 (1/2, 1/2), z2 (1/4, 1),
                z3 (1, 1/8), so p(y|x,z) = (1/4, 1/4, 1/8)
    question 2: p_R = (1/3, 1/3, 1/3)  (doc scores 0, 0, 0);     per token: z1 (1, 1), z2 (1/2, 1/2), z3 (1/4, 1),
                so p(y|x,z) = (1, 1/4, 1/4)
"""

from __future__ import annotations

import math

import pytest
import torch

from rag_e2e.losses import (
    OBJECTIVES,
    ObjectiveSettings,
    ReaderScores,
    gumbel_topk_objective,
    rag_sequence_nll,
    rag_token_nll,
    scores_from_logits,
)
from rag_e2e.losses.gumbel import gumbel_noise

ATOL = 1e-12  # float64, closed forms vs logsumexp
ln = math.log


def _case(requires_grad: bool = False) -> ReaderScores:
    doc_scores = torch.tensor([[ln(2), 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    token_p = torch.tensor([[[1 / 2, 1 / 2], [1 / 4, 1], [1, 1 / 8]],
                            [[1, 1], [1 / 2, 1 / 2], [1 / 4, 1]]], dtype=torch.float64)  # (B, k, T)
    return ReaderScores(doc_scores.requires_grad_(requires_grad), token_p.log().requires_grad_(requires_grad))


# Written-out values: set likelihoods p(y|x,S) are means of p(y|x,z) (a per-passage reader reads a set as a mixture).
SET_NLL = [ln(24 / 5), ln(2)]  # means (1/4+1/4+1/8)/3 = 5/24 and (1+1/4+1/4)/3 = 1/2
SEQUENCE = [ln(32 / 7), ln(2)]  # 1/2·1/4 + 1/4·1/4 + 1/4·1/8 = 7/32;  (1 + 1/4 + 1/4)/3 = 1/2
TOKEN = [ln(512 / 153), ln(72 / 35)]  # (9/16)(17/32);  (7/12)(5/6)
EXPECTED = {
    # name: (settings, reader term, retriever term)
    "sequence": ({}, SEQUENCE, SEQUENCE),
    "token": ({}, TOKEN, TOKEN),
    "emdr2": ({}, SET_NLL, SEQUENCE),
    # τ = 1/2: targets ∝ p(y|x,z)² = (4/9, 4/9, 1/9) and (16/18, 1/18, 1/18); KL(target ‖ p_R)
    "pdist": ({"lm_temperature": 0.5},
              SET_NLL,
              [4 / 9 * ln(8 / 9) + 4 / 9 * ln(16 / 9) + 1 / 9 * ln(4 / 9),
               8 / 9 * ln(8 / 3) + 2 / 18 * ln(1 / 6)]),
    # leave-one-out set likelihoods (3/16, 3/16, 1/4) and (1/4, 5/8, 5/8); targets ∝ 1/those: (4/11, 4/11, 3/11)
    # and (5/9, 2/9, 2/9); KL(target ‖ p_R)
    "loop": ({},
             SET_NLL,
             [4 / 11 * ln(8 / 11) + 4 / 11 * ln(16 / 11) + 3 / 11 * ln(12 / 11),
              5 / 9 * ln(5 / 3) + 4 / 9 * ln(2 / 3)]),
    # β = 1/(8 ln 2): Q ∝ 2^(8·p(y|x,z)) = (4, 4, 2) -> (2/5, 2/5, 1/5) and (256, 4, 4) -> (32/33, 1/66, 1/66);
    # KL(p_R ‖ Q)
    "lsr": ({"lsr_temperature": 1 / (8 * ln(2))},
            SET_NLL,
            [3 / 4 * ln(5 / 4) + 1 / 4 * ln(5 / 8), (ln(11 / 32) + 2 * ln(22)) / 3]),
    # m = 2 of 3, two samples with fixed Gumbel noise (below): keys s + g pick {z1, z2}, {z1, z3} for question 1 and
    # {z1, z3}, {z2, z3} for question 2; U = log of the pair's mean p(y|x,z); retriever = −mean U
    "gumbel_topk": ({"gumbel_samples": 2, "gumbel_set_size": 2},
                    SET_NLL,
                    [(ln(4) + ln(16 / 3)) / 2, (ln(8 / 5) + ln(4)) / 2]),
}
NOISE = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 3.0]],
                      [[0.5, 0.0, 2.0], [0.0, 1.0, 2.0]]], dtype=torch.float64)  # (B, S, k)


def _terms(name: str, scores: ReaderScores, settings: ObjectiveSettings):
    if name == "gumbel_topk":
        return gumbel_topk_objective(scores, settings, noise=NOISE)
    return OBJECTIVES[name].fn(scores, settings)


def test_every_registered_objective_has_a_hand_computed_case():
    assert set(EXPECTED) == set(OBJECTIVES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hand_computed_values(name):
    overrides, reader, retriever = EXPECTED[name]
    terms = _terms(name, _case(), ObjectiveSettings(**overrides))
    torch.testing.assert_close(terms.reader, torch.tensor(reader, dtype=torch.float64), rtol=0, atol=ATOL)
    torch.testing.assert_close(terms.retriever, torch.tensor(retriever, dtype=torch.float64), rtol=0, atol=ATOL)
    torch.testing.assert_close(terms.total, terms.reader + terms.retriever, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["emdr2", "pdist", "loop", "lsr", "gumbel_topk"])
def test_reader_mix_retriever_trains_the_reader_on_the_retriever_weighted_marginal(name):
    overrides, _, retriever = EXPECTED[name]
    terms = _terms(name, _case(), ObjectiveSettings(**overrides, reader_mix="retriever"))
    torch.testing.assert_close(terms.reader, torch.tensor(SEQUENCE, dtype=torch.float64), rtol=0, atol=ATOL)
    torch.testing.assert_close(terms.retriever, torch.tensor(retriever, dtype=torch.float64), rtol=0, atol=ATOL)


def _random_scores(batch: int = 3, k: int = 4, tgt_len: int = 3) -> ReaderScores:
    doc_scores = torch.randn(batch, k, dtype=torch.float64) * 2
    token_ll = torch.log_softmax(torch.randn(batch, k, tgt_len, 7, dtype=torch.float64) * 2, -1)[..., 0]
    token_ll[0, :, -1] = 0.0  # an ignored position
    return ReaderScores(doc_scores.requires_grad_(True), token_ll.requires_grad_(True))


@pytest.mark.parametrize("reader_mix", ["uniform", "retriever"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_term_trains_only_its_own_side(name, reader_mix):
    scores = _random_scores()
    settings = ObjectiveSettings(gumbel_samples=8, gumbel_set_size=2, reader_mix=reader_mix)
    terms = OBJECTIVES[name].fn(scores, settings)
    d_scores, d_ll = torch.autograd.grad(terms.retriever.sum(), [scores.doc_scores, scores.token_ll],
                                         allow_unused=True, retain_graph=True)
    assert d_ll is None, "the retriever term must not train the reader"
    assert d_scores is not None and d_scores.abs().sum() > 0
    d_scores, d_ll = torch.autograd.grad(terms.reader.sum(), [scores.doc_scores, scores.token_ll],
                                         allow_unused=True)
    assert d_scores is None, "the reader term must not train the retriever"
    assert d_ll is not None and d_ll.abs().sum() > 0


@pytest.mark.parametrize("name", ["emdr2", "pdist", "loop", "lsr"])
def test_retriever_gradients_match_finite_differences(name):
    scores = _random_scores()
    ll = scores.token_ll.detach()

    def retriever(doc_scores):
        return OBJECTIVES[name].fn(ReaderScores(doc_scores, ll), ObjectiveSettings(lm_temperature=0.7)).retriever

    assert torch.autograd.gradcheck(retriever, (scores.doc_scores.detach().requires_grad_(True),))


@pytest.mark.parametrize(("name", "loss_fn"), [("sequence", rag_sequence_nll), ("token", rag_token_nll)])
@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_marginal_terms_equal_the_marginal_and_their_gradients_add_up_to_its(name, loss_fn, epsilon):
    batch, k, tgt_len, vocab = 2, 3, 4, 6
    logits = (torch.randn(batch * k, tgt_len, vocab, dtype=torch.float64) * 2).requires_grad_(True)
    doc_scores = torch.randn(batch, k, dtype=torch.float64).requires_grad_(True)
    labels = torch.randint(0, vocab, (batch, tgt_len))
    labels[1, -1] = -100
    temperature = 0.3
    reference = loss_fn(logits, doc_scores, labels, k, temperature=temperature, epsilon=epsilon)
    ref_grads = torch.autograd.grad(reference.sum(), [logits, doc_scores])
    settings = ObjectiveSettings(prior_temperature=temperature, label_smoothing=epsilon)
    terms = OBJECTIVES[name].fn(scores_from_logits(logits, doc_scores, labels, k), settings)
    torch.testing.assert_close(terms.reader, reference, rtol=0, atol=ATOL)
    torch.testing.assert_close(terms.retriever, reference, rtol=0, atol=ATOL)
    grads = torch.autograd.grad(terms.total.sum(), [logits, doc_scores])
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=ATOL)


def test_gumbel_topk_pushes_up_the_passage_that_explains_the_answer():
    # Averaged over many sampled sets, raising the score of the one passage that explains the answer raises the
    # expected utility, and raising any other lowers it.
    torch.manual_seed(0)
    doc_scores = torch.zeros(1, 4, dtype=torch.float64, requires_grad=True)
    ll = torch.tensor([[[-8.0], [-0.1], [-8.0], [-8.0]]], dtype=torch.float64)
    settings = ObjectiveSettings(gumbel_samples=2000, gumbel_set_size=2)
    terms = gumbel_topk_objective(ReaderScores(doc_scores, ll), settings)
    (grad,) = torch.autograd.grad(terms.retriever.sum(), [doc_scores])
    assert grad[0, 1] < 0 and (grad[0, [0, 2, 3]] > 0).all()


def test_hard_topk_picks_the_m_largest_and_soft_topk_is_its_differentiable_relaxation():
    from rag_e2e.losses.gumbel import hard_topk, soft_topk

    keys = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    mask = hard_topk(keys.detach(), 3)
    assert torch.equal(mask.sum(-1), torch.full((5,), 3.0, dtype=torch.float64))
    assert torch.equal(mask.bool(), torch.zeros(5, 6, dtype=torch.bool).scatter(1, keys.topk(3).indices, True))
    soft = soft_topk(keys, 3, 0.5)
    torch.testing.assert_close(soft.detach().sum(-1), torch.full((5,), 3.0, dtype=torch.float64))
    (grad,) = torch.autograd.grad((soft * torch.arange(6.0, dtype=torch.float64)).sum(), [keys])
    assert grad.abs().sum() > 0


def test_gumbel_noise_is_standard_gumbel():
    torch.manual_seed(0)
    g = gumbel_noise((200_000,), torch.zeros(1, dtype=torch.float64))
    assert torch.isfinite(g).all()
    # mean γ (Euler–Mascheroni), variance π²/6; standard errors ~0.003 and ~0.01 at this size
    assert abs(g.mean().item() - 0.5772156649) < 0.015 and abs(g.var().item() - math.pi ** 2 / 6) < 0.05


def test_gumbel_topk_gradient_stays_bounded_when_the_set_misses_the_answer():
    # The passage that explains the answer (ll −0.1 against −20) is left out of every sampled set by the noise. A
    # straight-through mask inside U would give it ∂U/∂mask = p_gold / p_set ≈ e^20; the relaxed utility's gradient
    # stays at the scale of the other objectives' (≤ m/(θλ) per key here) and still points at it.
    doc_scores = torch.tensor([[0.3, 0.2, 0.1, 0.0]], dtype=torch.float64, requires_grad=True)
    ll = torch.tensor([[[-20.0], [-20.0], [-20.0], [-0.1]]], dtype=torch.float64)
    noise = torch.tensor([[[0.0, 0.0, -5.0, -5.0], [0.0, -5.0, 0.0, -5.0]]], dtype=torch.float64)
    settings = ObjectiveSettings(prior_temperature=0.1, gumbel_samples=2, gumbel_set_size=2, gumbel_temperature=0.5)
    terms = gumbel_topk_objective(ReaderScores(doc_scores, ll), settings, noise=noise)
    # forward: both hard sets miss the gold, U = log e^−20 = −20 exactly
    torch.testing.assert_close(terms.retriever, torch.tensor([20.0], dtype=torch.float64), rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad(terms.retriever.sum(), [doc_scores])
    bound = settings.gumbel_set_size / (settings.prior_temperature * settings.gumbel_temperature)
    assert torch.isfinite(grad).all() and grad.abs().max() <= bound
    assert grad[0, 3] < 0 and grad[0, 3] == grad[0].min()


def test_with_a_frozen_reader_emdr2_trains_the_retriever_exactly_as_sequence():
    # A frozen reader's log-likelihoods carry no graph: only the doc scores learn, and emdr2's retriever term is the
    # RAG-Sequence marginal with the reader held fixed (why sweep=ablation_objectives_squad_llm leaves emdr2 out).
    torch.manual_seed(0)
    doc_scores = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    token_ll = -torch.rand(4, 3, 5, dtype=torch.float64) * 3
    settings = ObjectiveSettings(prior_temperature=0.3)
    grads = [torch.autograd.grad(OBJECTIVES[name].fn(ReaderScores(doc_scores, token_ll), settings).total.sum(),
                                 [doc_scores])[0] for name in ("emdr2", "sequence")]
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-12)


def test_with_an_uninformative_reader_lsr_flattens_the_retriever_and_the_marginal_does_not_move_it():
    # Every retrieved passage gives the answer the same likelihood (none explains it, as for most questions while the
    # retriever is untrained): REPLUG's Q is then uniform, so KL(p_R ‖ Q) pulls the top passage down and the others up;
    # the marginal's posterior equals the prior, so its gradient is 0. Why `lsr` stalls on synthetic_hard from R@5 5%.
    doc_scores = torch.tensor([[0.5, 0.4, 0.3]], dtype=torch.float64, requires_grad=True)
    ll = torch.full((1, 3, 1), -9.0, dtype=torch.float64)
    settings = ObjectiveSettings(prior_temperature=0.1)
    grad = {name: torch.autograd.grad(OBJECTIVES[name].fn(ReaderScores(doc_scores, ll), settings).retriever.sum(),
                                      [doc_scores])[0][0] for name in ("lsr", "sequence")}
    torch.testing.assert_close(grad["sequence"], torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)
    assert grad["lsr"][0] > 0 and grad["lsr"][2] < 0  # descent lowers s_1 and raises s_3: toward uniform p_R
    p = torch.softmax(doc_scores.detach()[0] / 0.1, -1)
    expected = p * (torch.log(p) + math.log(3) - (p * (torch.log(p) + math.log(3))).sum()) / 0.1  # ∂KL(p‖U)/∂s
    torch.testing.assert_close(grad["lsr"], expected, rtol=1e-10, atol=0)


def test_lsr_follows_a_weak_readers_ranking_only_when_beta_is_on_the_scale_of_its_likelihoods():
    # REPLUG's Q softmaxes likelihoods, not log-likelihoods: on passages that do not explain the answer p(y|x,z) is
    # small (here 0.02, 0.005, 0.001), so Q ∝ exp(p/β) is all but uniform at β = 0.1 and follows the reader at
    # β = 0.001. The retriever ranks the reader's best passage last; only the small β raises it (what separates
    # lsr's β = 0.1 and β = 0.001 rows on synthetic_hard).
    doc_scores = torch.tensor([[0.3, 0.4, 0.5]], dtype=torch.float64, requires_grad=True)
    p = torch.tensor([0.02, 0.005, 0.001], dtype=torch.float64)
    ll = p.log().view(1, 3, 1)
    for beta, spread in ((0.1, math.exp(0.019 / 0.1)), (0.001, math.exp(0.019 / 0.001))):
        q = torch.exp(p / beta) / torch.exp(p / beta).sum()
        assert q.max() / q.min() == pytest.approx(spread, rel=1e-12)  # Q's ratio is exp((p_max − p_min)/β)
        settings = ObjectiveSettings(prior_temperature=0.1, lsr_temperature=beta)
        terms = OBJECTIVES["lsr"].fn(ReaderScores(doc_scores, ll), settings)
        p_r = torch.softmax(doc_scores.detach()[0] / 0.1, -1)
        torch.testing.assert_close(terms.retriever, (p_r * (p_r.log() - q.log())).sum().view(1), rtol=0, atol=ATOL)
        (grad,) = torch.autograd.grad(terms.retriever.sum(), [doc_scores])
        if beta == 0.1:
            assert grad[0, 0] < 0 and grad[0, 2] > 0  # toward uniform: the bottom passage rises, the top one falls
            assert q.max() / q.min() < 1.21
        else:
            assert grad[0, 0] == grad[0].min() < 0  # descent raises the reader's best passage the most
            assert q[0] > 0.99
