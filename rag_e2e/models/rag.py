"""RAG forward pass: retrieve -> generate -> marginalize, and RAG decoding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rag_e2e.data.types import Passage
from rag_e2e.losses import doc_log_prior, rag_sequence_nll, rag_token_nll
from rag_e2e.models.generator import decode_answers, decoder_start_id, encode_answers, encode_sources, shift_right
from rag_e2e.retrieval.encoders import BiEncoder, eval_mode, tokenize_passages
from rag_e2e.retrieval.index import Index

LossKind = Literal["sequence", "token"]


@dataclass
class Retrieved:
    """Top-k passages for a batch of questions."""

    rows: torch.Tensor  # (B, k) corpus row indices, best first
    doc_scores: torch.Tensor  # (B, k) q·d recomputed from the live query vectors (carries gradient)


class RagModel(nn.Module):
    """A bi-encoder retriever over an index, and a seq2seq generator reading each retrieved passage.

    The index holds passage vectors from some earlier passage tower; they are constants. Query vectors are live, so
    doc_scores = q·d and the marginal likelihood always train the query encoder. With `fresh_passages` the retrieved
    passages are re-encoded by the current passage tower, in-graph when it trains (end to end); with
    `rerank_candidates` = k' > k, k' candidates from the stale index are re-scored that way and the best k kept.
    """

    def __init__(self, encoder: BiEncoder, generator: nn.Module, gen_tokenizer: PreTrainedTokenizerBase,
                 corpus: list[Passage], index: Index | None, *, k: int, temperature: float, loss: LossKind,
                 max_source_length: int, max_target_length: int,
                 passage_tokenizer: PreTrainedTokenizerBase | None = None, max_passage_length: int = 128,
                 fresh_passages: bool = False, rerank_candidates: int = 0, closed_book: bool = False):
        super().__init__()
        self.encoder = encoder
        self.generator = generator
        self.gen_tokenizer = gen_tokenizer
        self.corpus = corpus
        self.index: Index | None = None
        if index is not None:
            self.set_index(index)
        self.k, self.temperature, self.loss_kind = k, temperature, loss
        self.max_source_length, self.max_target_length = max_source_length, max_target_length
        if (fresh_passages or rerank_candidates) and passage_tokenizer is None:
            raise ValueError("fresh_passages / rerank_candidates need the passage tokenizer")
        self.passage_tokenizer, self.max_passage_length = passage_tokenizer, max_passage_length
        self.fresh_passages, self.rerank_candidates = fresh_passages, rerank_candidates
        self.closed_book = closed_book  # the generator-only baseline: every "passage" it reads is empty

    def set_index(self, index: Index) -> None:
        """Swap in a (re)built index over the same corpus; takes effect at the next `retrieve`."""
        if index.size != len(self.corpus):
            raise ValueError(f"index has {index.size} vectors but the corpus has {len(self.corpus)} passages")
        self.index = index

    def encode_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, k) corpus rows -> (B, k, d) vectors from the current passage tower (in-graph if it trains).

        Without dropout, as the index encodes them: a fresh vector then differs from the stored one only by what the
        tower has learned since the last refresh, not by dropout noise in every doc score (gradients still flow).
        """
        passages = [self.corpus[r] for r in rows.reshape(-1).tolist()]
        tok = tokenize_passages(self.passage_tokenizer, passages, self.max_passage_length, rows.device)
        with eval_mode(self.encoder.passage_model):
            p_reps = self.encoder.encode_passage(tok["input_ids"], tok["attention_mask"])  # (B*k, d)
        return p_reps.view(*rows.shape, -1)

    def retrieve(self, q_ids: torch.Tensor, q_mask: torch.Tensor, k: int) -> Retrieved:
        """Search the index with the current query encoder; doc_scores keep the graph of the live towers."""
        if self.index is None:
            raise RuntimeError("no index yet: it is built when training or testing starts (IndexRefreshCallback)")
        q_reps = self.encoder.encode_query(q_ids, q_mask)  # (B, d), live
        k_search = min(max(k, self.rerank_candidates), self.index.size)
        _, rows, p_reps = self.index.search_with_vectors(q_reps.detach(), k_search)  # (B, k'), (B, k', d) constants
        if self.fresh_passages or self.rerank_candidates:
            p_reps = self.encode_rows(rows)  # (B, k', d) from the current passage tower
        doc_scores = torch.einsum("bd,bkd->bk", q_reps, p_reps.to(q_reps))  # (B, k')
        if k_search > k:  # rerank: keep the k best under the current towers (gather keeps the graph)
            order = doc_scores.detach().topk(k, dim=1).indices  # (B, k)
            rows, doc_scores = rows.gather(1, order), doc_scores.gather(1, order)
        elif self.fresh_passages:  # fresh scores may reorder the stale top-k: keep "best first"
            order = doc_scores.detach().argsort(dim=1, descending=True, stable=True)
            rows, doc_scores = rows.gather(1, order), doc_scores.gather(1, order)
        return Retrieved(rows=rows, doc_scores=doc_scores)

    def sources(self, questions: list[str], rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Generator inputs for every (question, retrieved passage) pair, (B*k, L), example-major."""
        k = rows.shape[1]
        passages = [self.corpus[r] for r in rows.reshape(-1).tolist()]
        titles, texts = [p.title for p in passages], [p.text for p in passages]
        if self.closed_book:
            titles = texts = [""] * len(passages)
        repeated = [q for q in questions for _ in range(k)]
        enc = encode_sources(self.gen_tokenizer, titles, texts, repeated, self.max_source_length)
        return {name: t.to(rows.device) for name, t in enc.items()}

    def labels(self, answers: list[str]) -> torch.Tensor:
        return encode_answers(self.gen_tokenizer, answers, self.max_target_length)

    def seq_logits(self, src: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """(N, L) sources and (N, T) labels -> (N, T, V) logits, teacher-forced."""
        dec_in = shift_right(labels, decoder_start_id(self.generator), self.gen_tokenizer.pad_token_id)
        return self.generator(input_ids=src["input_ids"], attention_mask=src["attention_mask"],
                              decoder_input_ids=dec_in).logits

    def forward(self, q_ids: torch.Tensor, q_mask: torch.Tensor, questions: list[str], labels: torch.Tensor,
                epsilon: float = 0.0) -> tuple[torch.Tensor, Retrieved]:
        """Marginal NLL per example (B,) over the top-k retrieved passages."""
        ret = self.retrieve(q_ids, q_mask, self.k)
        src = self.sources(questions, ret.rows)
        labels = labels.to(ret.rows.device)
        logits = self.seq_logits(src, labels.repeat_interleave(self.k, dim=0))  # (B*k, T, V)
        nll_fn = rag_sequence_nll if self.loss_kind == "sequence" else rag_token_nll
        nll = nll_fn(logits, ret.doc_scores, labels, self.k, temperature=self.temperature, epsilon=epsilon)
        return nll, ret

    def reader_nll(self, titles: list[str], texts: list[str], questions: list[str], answers: list[str]) -> torch.Tensor:
        """Plain supervised NLL per example (B,) of the generator given the gold passage (no retrieval)."""
        device = next(self.generator.parameters()).device
        src = encode_sources(self.gen_tokenizer, titles, texts, questions, self.max_source_length)
        src = {name: t.to(device) for name, t in src.items()}
        labels = self.labels(answers).to(device)
        logits = self.seq_logits(src, labels)
        logp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        return -(logp * (labels != -100)).sum(1)

    @torch.no_grad()
    def generate(self, questions: list[str], ret: Retrieved, num_beams: int = 1,
                 max_new_tokens: int = 16) -> list[str]:
        """Answers for a batch, decoded over the top-k passages in `ret`.

        RAG-Sequence: each passage proposes its beam-search (or greedy) answer; every distinct candidate is then
        scored by the full marginal p(y|x) = Σ_z p(z|x) p(y|x,z) over all k passages ("thorough" decoding).
        RAG-Token: greedy decoding of the per-token marginal Σ_z p(z|x) p(y_t|x,z,y<t).
        """
        src = self.sources(questions, ret.rows)
        if self.loss_kind == "token":
            return self._greedy_token(src, ret.doc_scores, max_new_tokens)
        k = ret.rows.shape[1]
        out = self.generator.generate(**src, num_beams=num_beams, max_new_tokens=max_new_tokens, do_sample=False)
        proposals = decode_answers(self.gen_tokenizer, out)  # (B*k,)
        candidates = [sorted(set(proposals[b * k : (b + 1) * k])) for b in range(len(questions))]
        flat = [(b, c) for b, cands in enumerate(candidates) for c in cands]
        labels = self.labels([c for _, c in flat]).to(ret.rows.device)  # (C, T)
        owner = torch.tensor([b for b, _ in flat], device=ret.rows.device)
        # Score candidate c of example b against all k passages of b: rows (c, z) in candidate-major order.
        src_rows = (owner.unsqueeze(1) * k + torch.arange(k, device=owner.device)).reshape(-1)  # (C*k,)
        cand_src = {name: t[src_rows] for name, t in src.items()}
        logits = self.seq_logits(cand_src, labels.repeat_interleave(k, dim=0))
        nll = rag_sequence_nll(logits, ret.doc_scores[owner], labels, k, temperature=self.temperature)  # (C,)
        best: dict[int, tuple[float, str]] = {}
        for (b, cand), value in zip(flat, nll.tolist()):
            if b not in best or value < best[b][0]:
                best[b] = (value, cand)
        return [best[b][1] for b in range(len(questions))]

    def _greedy_token(self, src: dict[str, torch.Tensor], doc_scores: torch.Tensor, max_new_tokens: int) -> list[str]:
        batch, k = doc_scores.shape
        log_prior = doc_log_prior(doc_scores, self.temperature)  # (B, k)
        encoder_outputs = self.generator.get_encoder()(**src)
        start, end = decoder_start_id(self.generator), self.generator.config.eos_token_id
        tokens = torch.full((batch, 1), start, dtype=torch.long, device=doc_scores.device)
        done = torch.zeros(batch, dtype=torch.bool, device=doc_scores.device)
        for _ in range(max_new_tokens):
            logits = self.generator(encoder_outputs=encoder_outputs, attention_mask=src["attention_mask"],
                                    decoder_input_ids=tokens.repeat_interleave(k, dim=0)).logits[:, -1]  # (B*k, V)
            logp = torch.log_softmax(logits.float(), -1).view(batch, k, -1)
            marginal = torch.logsumexp(logp + log_prior.unsqueeze(-1), dim=1)  # (B, V)
            nxt = marginal.argmax(-1).masked_fill(done, self.gen_tokenizer.pad_token_id)
            tokens = torch.cat([tokens, nxt.unsqueeze(1)], dim=1)
            done |= nxt == end
            if done.all():
                break
        return decode_answers(self.gen_tokenizer, tokens[:, 1:])
