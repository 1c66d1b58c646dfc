"""RAG decoding over k retrieved passages per question, for any `Reader` (Lewis et al. 2020, §2.5).

    RAG-Sequence "thorough": every passage proposes `num_beams` beam-search answers; each distinct candidate y is
        scored on all k passages, log p(y|x) = logsumexp_z [ log p(z|x) + log p(y|x,z) ]  (C·k scored rows).
    RAG-Sequence "fast": as thorough, but p(y|x,z) counts as 0 on a passage whose beams did not produce y, so only
        the (passage, own proposal) pairs are scored (at most k·num_beams rows, no pass over the other pairs).
    RAG-Token: beam search over the per-token marginal log Σ_z p(z|x) p(y_t|x,z,y<t), with the readers' KV caches
        (greedy for one beam).

Candidates are answer strings, scored as the reader scores a training answer (its tokens, then the end token).
"""

from __future__ import annotations

import torch

from rag_e2e.models.reader import Pairs, Reader, token_ll

DECODINGS = ("thorough", "fast")


def _candidates(proposals: list[str], batch: int, k: int, per_row: int) -> list[list[str]]:
    """Distinct proposals of each question, in a fixed order (proposals are row-major: question, passage, beam)."""
    width = k * per_row
    return [sorted(set(proposals[b * width : (b + 1) * width])) for b in range(batch)]


def _score(reader: Reader, pairs: Pairs, src_rows: list[int], answers: list[str], max_source_length: int,
           max_target_length: int, device: torch.device) -> torch.Tensor:
    """log p(answer | pair) for each (pair row, answer), (N,)."""
    labels = reader.answer_labels(answers, max_target_length).to(device)  # (N, T)
    return token_ll(reader, pairs.select(src_rows), labels, max_source_length).sum(-1)


def sequence_decode(reader: Reader, pairs: Pairs, log_prior: torch.Tensor, *, decoding: str = "thorough",
                    num_beams: int = 1, max_new_tokens: int = 16, max_source_length: int = 128,
                    max_target_length: int = 32) -> list[str]:
    """RAG-Sequence answers (one per question) for `pairs` (B*k rows, question-major) and log p(z|x) (B, k)."""
    if decoding not in DECODINGS:
        raise ValueError(f"decoding is one of {', '.join(DECODINGS)} (got '{decoding}')")
    batch, k = log_prior.shape
    proposals = reader.generate(pairs, max_source_length, num_beams=num_beams, max_new_tokens=max_new_tokens,
                                num_return=num_beams)  # (B*k*num_beams,)
    candidates = _candidates(proposals, batch, k, num_beams)
    if all(len(c) == 1 for c in candidates):  # one candidate per question: nothing to rescore
        return [c[0] for c in candidates]
    flat = [(b, c) for b, cands in enumerate(candidates) for c in cands]
    if decoding == "thorough":
        # Candidate c of question b against all k passages of b: (C, k) log-likelihoods.
        src = [b * k + z for b, _ in flat for z in range(k)]
        ll = _score(reader, pairs, src, [c for _, c in flat for _ in range(k)], max_source_length,
                    max_target_length, log_prior.device).view(len(flat), k)
    else:
        # Only where passage z proposed c; elsewhere log p(c|x,z) = -inf (probability 0).
        own = sorted({(i, z) for i, (b, c) in enumerate(flat) for z in range(k)
                      if c in proposals[(b * k + z) * num_beams : (b * k + z + 1) * num_beams]})
        scored = _score(reader, pairs, [flat[i][0] * k + z for i, z in own], [flat[i][1] for i, _ in own],
                        max_source_length, max_target_length, log_prior.device)
        ll = torch.full((len(flat), k), float("-inf"), dtype=scored.dtype, device=scored.device)
        ll[[i for i, _ in own], [z for _, z in own]] = scored
    owner = torch.tensor([b for b, _ in flat], device=log_prior.device)
    nll = -torch.logsumexp(ll + log_prior[owner].to(ll), dim=1)  # (C,)
    best: dict[int, tuple[float, str]] = {}
    for (b, cand), value in zip(flat, nll.tolist()):
        if b not in best or value < best[b][0]:
            best[b] = (value, cand)
    return [best[b][1] for b in range(batch)]


def token_decode(reader: Reader, pairs: Pairs, log_prior: torch.Tensor, *, num_beams: int = 1,
                 max_new_tokens: int = 16, max_source_length: int = 128) -> list[str]:
    """RAG-Token answers: greedy (one beam) or beam search over the per-token marginal (no length penalty)."""
    if num_beams == 1:
        return _greedy_token(reader, pairs, log_prior, max_new_tokens, max_source_length)
    return _beam_token(reader, pairs, log_prior, num_beams, max_new_tokens, max_source_length)


def _greedy_token(reader: Reader, pairs: Pairs, log_prior: torch.Tensor, max_new_tokens: int,
                  max_source_length: int) -> list[str]:
    batch, k = log_prior.shape
    device = log_prior.device
    decoder = reader.start_decoding(pairs, max_source_length)
    stops = torch.tensor(reader.stop_ids, device=device)
    tokens = torch.empty((batch, 0), dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    last = None
    for _ in range(max_new_tokens):
        logp = decoder.step(last).view(batch, k, -1)  # (B, k, V), prompt KV cache reused
        marginal = torch.logsumexp(logp + log_prior.unsqueeze(-1), dim=1)  # (B, V)
        nxt = marginal.argmax(-1).masked_fill(done, reader.pad_id)
        tokens = torch.cat([tokens, nxt.unsqueeze(1)], dim=1)
        done |= torch.isin(nxt, stops)
        if done.all():
            break
        last = nxt.repeat_interleave(k)  # (B*k,) every passage row continues with the chosen token
    return reader.decode(tokens)


def _beam_token(reader: Reader, pairs: Pairs, log_prior: torch.Tensor, num_beams: int, max_new_tokens: int,
                max_source_length: int) -> list[str]:
    """Beam search; a hypothesis ends at a stop token. Scores only fall as tokens are added (log-probs ≤ 0), so a
    question is done once its best finished hypothesis scores at least its best live beam."""
    batch, k = log_prior.shape
    device = log_prior.device
    decoder = reader.start_decoding(pairs, max_source_length)
    beams = torch.zeros((batch, 1, 0), dtype=torch.long, device=device)  # (B, n, t) live hypotheses
    scores = torch.zeros((batch, 1), device=device)  # (B, n) their log p(y_≤t | x)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    last = None
    for _ in range(max_new_tokens):
        n = beams.shape[1]
        logp = decoder.step(last).view(batch, n, k, -1)  # (B, n, k, V)
        marginal = torch.logsumexp(logp + log_prior[:, None, :, None], dim=2)  # (B, n, V)
        total = (scores.unsqueeze(-1) + marginal).view(batch, -1)  # (B, n*V)
        vocab = marginal.shape[-1]
        top_scores, top_ids = total.topk(min(2 * num_beams, total.shape[1]), dim=1)  # (B, 2n')
        next_beams, next_scores, parents = [], [], []
        for b in range(batch):
            keep: list[tuple[float, int, int]] = []
            for value, flat in zip(top_scores[b].tolist(), top_ids[b].tolist()):
                parent, tok = divmod(flat, vocab)
                if tok in reader.stop_ids:
                    finished[b].append((value, beams[b, parent].tolist() + [tok]))
                elif len(keep) < num_beams:
                    keep.append((value, parent, tok))
            keep += [keep[-1]] * (num_beams - len(keep)) if keep else [(float("-inf"), 0, reader.pad_id)] * num_beams
            next_scores.append([v for v, _, _ in keep])
            parents.append([b * n + p for _, p, _ in keep])
            next_beams.append(torch.stack([torch.cat([beams[b, p], beams.new_tensor([t])]) for _, p, t in keep]))
        beams = torch.stack(next_beams)  # (B, num_beams, t+1)
        scores = torch.tensor(next_scores, device=device, dtype=scores.dtype)
        best_done = torch.tensor([max((v for v, _ in f), default=float("-inf")) for f in finished], device=device)
        if bool((best_done >= scores.max(1).values).all()):
            break
        # Each decoder row (question, beam, passage) continues from its parent beam's row, with the chosen token.
        rows = torch.tensor(parents, device=device).view(-1, 1) * k + torch.arange(k, device=device)  # (B*nb, k)
        decoder.reorder(rows.view(-1))
        last = beams[:, :, -1].repeat_interleave(k, dim=1).reshape(-1)  # (B*nb*k,)
    answers = []
    for b in range(batch):
        pool = finished[b] + [(v, beams[b, j].tolist()) for j, v in enumerate(scores[b].tolist())]
        answers.append(max(pool, key=lambda item: item[0])[1])
    width = max(map(len, answers), default=1) or 1
    padded = torch.full((batch, width), reader.pad_id, dtype=torch.long)
    for b, ids in enumerate(answers):
        padded[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return reader.decode(padded)
