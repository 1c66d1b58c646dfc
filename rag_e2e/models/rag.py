"""RAG forward pass: retrieve -> read -> marginalize, and RAG decoding, over any `Reader`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rag_e2e.data.mapped import row_lookup
from rag_e2e.data.types import Passage, QAExample
from rag_e2e.losses import ReaderScores, doc_log_prior, scores_from_logits
from rag_e2e.models.decoding import sequence_decode, token_decode
from rag_e2e.models.reader import Pairs, Reader, softmax_precision, token_ll
from rag_e2e.retrieval.encoders import BiEncoder, eval_mode, tokenize_passages
from rag_e2e.retrieval.index_base import Index


@dataclass
class Retrieved:
    """Top-k passages for a batch of questions."""

    rows: torch.Tensor  # (B, k) corpus row indices, best first
    doc_scores: torch.Tensor  # (B, k) q·d recomputed from the live query vectors (carries gradient)


@dataclass
class RagOutput:
    """One forward pass: what was read, and what the reader said about it (every objective's input)."""

    retrieved: Retrieved  # rows (B, k) read, best first
    scores: ReaderScores  # doc scores (B, k) with gradient, answer log-likelihoods per token (B, k, T)


class RagModel(nn.Module):
    """A bi-encoder retriever over an index, and a reader (seq2seq or causal LM) reading each retrieved passage.

    The index holds passage vectors from some earlier passage tower; they are constants. Query vectors are live, so
    doc_scores = q·d and the marginal likelihood always train the query encoder. With `fresh_passages` the retrieved
    passages are re-encoded by the current passage tower, in-graph when it trains (end to end); with
    `rerank_candidates` = k' > k, k' candidates from the stale index are re-scored that way and the best k kept.
    `closed_book` reads one empty passage (generator only); `read_gold` reads each question's gold passage (the
    reader's upper bound). Retrieval is still run and scored in both.
    """

    def __init__(self, encoder: BiEncoder, reader: Reader, corpus: Sequence[Passage], index: Index | None, *, k: int,
                 temperature: float, max_source_length: int, max_target_length: int, marginal: str = "sequence",
                 decoding: str = "thorough",
                 passage_tokenizer=None, max_passage_length: int = 128, fresh_passages: bool = False,
                 rerank_candidates: int = 0, closed_book: bool = False, read_gold: bool = False):
        super().__init__()
        self.encoder = encoder
        self.reader = reader
        self.generator = reader.model  # registered here, so its weights are this module's `generator.*`
        self.corpus = corpus
        self.row_of = row_lookup(corpus)  # pid -> row, None if absent
        self.index: Index | None = None
        if index is not None:
            self.set_index(index)
        # `marginal`: how answers are decoded, "token" (RAG-Token) or "sequence" (RAG-Sequence, `decoding` thorough
        # or fast); training objectives are the Lightning module's.
        self.k, self.temperature, self.marginal, self.decoding = k, temperature, marginal, decoding
        self.max_source_length, self.max_target_length = max_source_length, max_target_length
        if (fresh_passages or rerank_candidates) and passage_tokenizer is None:
            raise ValueError("fresh_passages / rerank_candidates need the passage tokenizer")
        self.passage_tokenizer, self.max_passage_length = passage_tokenizer, max_passage_length
        self.fresh_passages, self.rerank_candidates = fresh_passages, rerank_candidates
        self.closed_book, self.read_gold = closed_book, read_gold
        # (N,) int64 counts of the rows retrieved in training (set by a partial refresh, which re-encodes those first)
        self.retrieval_hits: torch.Tensor | None = None

    def set_index(self, index: Index) -> None:
        """Swap in a (re)built index over the same corpus; takes effect at the next `retrieve`."""
        if index.size != len(self.corpus):
            raise ValueError(f"index has {index.size} vectors but the corpus has {len(self.corpus)} passages")
        self.index = index

    # ---- retrieval ----------------------------------------------------------------------------------------------
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

    def retrieve(self, q_ids: torch.Tensor, q_mask: torch.Tensor, k: int, *, fresh: bool | None = None) -> Retrieved:
        """Search the index with the current query encoder; doc_scores keep the graph of the live towers.

        `fresh` (default: `fresh_passages`) re-encodes the retrieved passages with the current passage tower and
        re-sorts by those scores: training needs it for the passage tower's gradient. Evaluation passes False and
        gets what the index retrieves, as a deployed system would (a configured `rerank_candidates` stage still runs).
        """
        fresh = self.fresh_passages if fresh is None else fresh
        if self.index is None:
            raise RuntimeError("no index yet: it is built when training or testing starts (IndexRefreshCallback)")
        q_reps = self.encoder.encode_query(q_ids, q_mask)  # (B, d), live
        k_search = min(max(k, self.rerank_candidates), self.index.size)
        if fresh or self.rerank_candidates:  # the stored vectors would go unused (and cross ranks under DDP)
            _, rows = self.index.search(q_reps.detach(), k_search)  # (B, k')
            p_reps = self.encode_rows(rows)  # (B, k', d) from the current passage tower
        else:
            _, rows, p_reps = self.index.search_with_vectors(q_reps.detach(), k_search)  # (B, k', d) constants
        doc_scores = torch.einsum("bd,bkd->bk", q_reps, p_reps.to(q_reps))  # (B, k')
        if k_search > k:  # rerank: keep the k best under the current towers (gather keeps the graph)
            order = doc_scores.detach().topk(k, dim=1).indices  # (B, k)
            rows, doc_scores = rows.gather(1, order), doc_scores.gather(1, order)
        elif fresh:  # fresh scores may reorder the stale top-k: keep "best first"
            order = doc_scores.detach().argsort(dim=1, descending=True, stable=True)
            rows, doc_scores = rows.gather(1, order), doc_scores.gather(1, order)
        if self.retrieval_hits is not None and self.training:
            flat = rows.reshape(-1).cpu()
            self.retrieval_hits.index_add_(0, flat, torch.ones_like(flat))
        return Retrieved(rows=rows, doc_scores=doc_scores)

    def gold(self, examples: Sequence[QAExample]) -> Retrieved:
        """Each example's first gold passage as its one "retrieved" passage (prior 1)."""
        missing = [ex.qid for ex in examples if not ex.gold_pids or self.row_of(ex.gold_pids[0]) is None]
        if missing:
            raise ValueError(f"retriever.read_gold: question {missing[0]} has no gold passage in the corpus")
        device = next(self.generator.parameters()).device
        rows = torch.tensor([[self.row_of(ex.gold_pids[0])] for ex in examples], device=device)
        return Retrieved(rows=rows, doc_scores=torch.zeros(rows.shape, device=device))

    def to_read(self, ret: Retrieved, examples: Sequence[QAExample], k: int) -> Retrieved:
        """What the reader reads: the top k retrieved, or the gold passage (`read_gold`)."""
        if self.read_gold:
            return self.gold(examples)
        return Retrieved(rows=ret.rows[:, :k], doc_scores=ret.doc_scores[:, :k])

    # ---- reading ------------------------------------------------------------------------------------------------
    def pairs(self, questions: Sequence[str], rows: torch.Tensor) -> Pairs:
        """Reader rows for every (question, retrieved passage) pair, (B*k,), example-major."""
        k = rows.shape[1]
        passages = [self.corpus[r] for r in rows.reshape(-1).tolist()]
        titles, texts = [p.title for p in passages], [p.text for p in passages]
        if self.closed_book:
            titles = texts = [""] * len(passages)
        return Pairs(titles, texts, [q for q in questions for _ in range(k)])

    def labels(self, answers: Sequence[str]) -> torch.Tensor:
        return self.reader.answer_labels(answers, self.max_target_length)

    def token_ll(self, pairs: Pairs, labels: torch.Tensor) -> torch.Tensor:
        """(N, T) answer token log-likelihoods (memoized for a frozen reader)."""
        return token_ll(self.reader, pairs, labels, self.max_source_length)

    def forward(self, q_ids: torch.Tensor, q_mask: torch.Tensor, questions: list[str], labels: torch.Tensor,
                full_distributions: bool = False, examples: Sequence[QAExample] | None = None) -> RagOutput:
        """Retrieve the top k (or read the gold passage: `examples`, for `read_gold`) and score the answers on each.

        `full_distributions` also keeps log p(·|x,z,y<t) over the vocabulary (label smoothing needs it).
        """
        ret = self.gold(examples or []) if self.read_gold else self.retrieve(q_ids, q_mask, self.k)
        batch, k = ret.rows.shape
        pairs = self.pairs(questions, ret.rows)
        labels = labels.to(ret.rows.device)
        rep = labels.repeat_interleave(k, dim=0)  # (B*k, T)
        if not full_distributions:
            tok_ll = self.token_ll(pairs, rep).view(batch, k, -1)  # (B, k, T)
            return RagOutput(ret, ReaderScores(ret.doc_scores, tok_ll))
        logits = self.reader.answer_logits(pairs, rep, self.max_source_length)  # (B*k, T, V)
        logits = softmax_precision(logits)
        return RagOutput(ret, scores_from_logits(logits, ret.doc_scores, labels, k))

    def reader_nll(self, titles: list[str], texts: list[str], questions: list[str], answers: list[str]) -> torch.Tensor:
        """Plain supervised NLL per example (B,) of the reader given the gold passage (no retrieval)."""
        device = next(self.generator.parameters()).device
        labels = self.labels(answers).to(device)
        return -self.token_ll(Pairs(titles, texts, questions), labels).sum(1)

    # ---- decoding -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, questions: list[str], ret: Retrieved, num_beams: int = 1,
                 max_new_tokens: int = 16) -> list[str]:
        """Answers for a batch, decoded over the passages in `ret` (rag_e2e.models.decoding)."""
        pairs = self.pairs(questions, ret.rows)
        log_prior = doc_log_prior(ret.doc_scores, self.temperature)  # (B, k)
        if self.marginal == "token":
            return token_decode(self.reader, pairs, log_prior, num_beams=num_beams, max_new_tokens=max_new_tokens,
                                max_source_length=self.max_source_length)
        return sequence_decode(self.reader, pairs, log_prior, decoding=self.decoding, num_beams=num_beams,
                               max_new_tokens=max_new_tokens, max_source_length=self.max_source_length,
                               max_target_length=self.max_target_length)
