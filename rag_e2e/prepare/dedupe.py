"""Exact (hash of the normalised text) and near (MinHash LSH over word 5-grams) duplicate documents.

Documents are offered in a fixed order (input files sorted by key, documents in file order); the first of a group
of duplicates is kept. Signatures are computed once per document and stored in its file's shard, so a resumed run
rebuilds this state from the shards instead of re-reading the inputs (no pickle of the index is ever written).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

SHINGLE_WORDS = 5  # word n-grams: long enough that sharing many of them means sharing text, not vocabulary
MINHASH_SEED = 1
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Duplicate:
    """A dropped document: which kept document it duplicates, and how similar they are (1.0 for exact copies)."""

    doc_id: str
    duplicate_of: str
    kind: str  # "exact" or "near"
    similarity: float


def text_hash(text: str) -> str:
    """SHA-256 of the text with whitespace runs made single spaces (cleaning already normalised the rest)."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


class Signer:
    """MinHash signatures of documents' word 5-grams (lower-cased), all with the same permutations.

    Args:
        num_perm: permutations, i.e. the signature length.
    """

    def __init__(self, num_perm: int) -> None:
        self._proto = MinHash(num_perm=num_perm, seed=MINHASH_SEED)  # permutations generated once, then shared
        self.scheme = self._proto.scheme

    def signature(self, text: str) -> np.ndarray:
        """(num_perm,) uint32 MinHash of the text's shingles (a text shorter than a shingle is one shingle)."""
        words = _WORD.findall(text.casefold())
        n = SHINGLE_WORDS
        shingles = {" ".join(words[k:k + n]) for k in range(max(1, len(words) - n + 1))}
        m = self._proto.copy()
        m.update_batch([s.encode("utf-8") for s in shingles])
        return m.hashvalues.astype(np.uint32)


class Deduper:
    """Decides, document by document in order, whether each duplicates one already kept.

    Args:
        threshold: Jaccard similarity (estimated from signatures) at or above which a document is a near duplicate.
        num_perm: the signatures' length.
        scheme: the datasketch hashing scheme the signatures were made with (`Signer.scheme`).
    """

    def __init__(self, threshold: float, num_perm: int, scheme: str) -> None:
        self.threshold, self.num_perm, self.scheme = threshold, num_perm, scheme
        self._exact: dict[str, str] = {}  # text hash -> kept doc id
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._signatures: dict[str, np.ndarray] = {}  # kept doc id -> signature, to verify LSH candidates
        self._order: dict[str, int] = {}  # kept doc id -> position among kept documents

    def offer(self, doc_id: str, digest: str, signature: np.ndarray) -> Duplicate | None:
        """Keep the document (None) or say which kept document it duplicates.

        LSH candidates are confirmed by their estimated Jaccard: LSH alone lets some less similar pairs through.
        Among confirmed candidates the most similar wins, ties going to the earliest kept.
        """
        if digest in self._exact:
            return Duplicate(doc_id, self._exact[digest], "exact", 1.0)
        signature = np.asarray(signature, dtype=np.uint32)
        if len(signature) != self.num_perm:
            raise ValueError(f"signature of {doc_id} has {len(signature)} values, expected {self.num_perm}")
        minhash = LeanMinHash(seed=MINHASH_SEED, hashvalues=signature, scheme=self.scheme)
        confirmed = []  # (similarity, -order, id): LSH returns a set, so order is made explicit
        for other in self._lsh.query(minhash):
            similarity = float(np.mean(self._signatures[other] == signature))
            if similarity >= self.threshold:
                confirmed.append((similarity, -self._order[other], other))
        if confirmed:
            similarity, _, other = max(confirmed)
            return Duplicate(doc_id, other, "near", round(similarity, 4))
        self._exact[digest] = doc_id
        self._lsh.insert(doc_id, minhash)
        self._signatures[doc_id] = signature
        self._order[doc_id] = len(self._order)
        return None
