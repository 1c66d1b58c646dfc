"""Export's saved vectors: the newest complete version encoded over this corpus by this passage tower, else None."""

import numpy as np
import torch

from rag_e2e.inference.saved_vectors import saved_vectors
from rag_e2e.retrieval.exact_index import ExactIndex
from rag_e2e.retrieval.index import IndexMeta, save_index


def _save(index_dir, version, rank, world, vectors, corpus="c0", tower="t0"):
    index = ExactIndex(torch.from_numpy(vectors))
    meta = IndexMeta.for_index(index, corpus_fingerprint=corpus, encoder_fingerprint=tower, encoder_step=version)
    save_index(index, index_dir / f"v{version}-rank{rank}-of-{world}", meta)


def test_shards_join_in_rank_order_and_the_newest_matching_version_wins(tmp_path):
    rng = np.random.default_rng()
    full = rng.standard_normal((10, 4)).astype(np.float32)
    _save(tmp_path, 0, 0, 1, full, tower="t0")  # the initial index, another tower
    _save(tmp_path, 1, 1, 2, full[6:], tower="t1")  # rank 1 saved before rank 0: order by rank, not by file
    _save(tmp_path, 1, 0, 2, full[:6], tower="t1")
    _save(tmp_path, 2, 0, 2, full[:6], tower="t1")  # version 2 incomplete (rank 1 missing): skipped
    vectors, version = saved_vectors(tmp_path, corpus_fingerprint="c0", encoder_fingerprint="t1", size=10)
    assert version == "v1, 2 shard(s)"
    np.testing.assert_array_equal(vectors, full)
    vectors, version = saved_vectors(tmp_path, corpus_fingerprint="c0", encoder_fingerprint="t0", size=10)
    assert version == "v0, 1 shard(s)" and np.array_equal(vectors, full)


def test_another_corpus_tower_or_size_gives_none(tmp_path):
    full = np.ones((6, 3), dtype=np.float32)
    _save(tmp_path, 0, 0, 1, full)
    assert saved_vectors(tmp_path, corpus_fingerprint="other", encoder_fingerprint="t0", size=6) is None
    assert saved_vectors(tmp_path, corpus_fingerprint="c0", encoder_fingerprint="trained", size=6) is None
    assert saved_vectors(tmp_path, corpus_fingerprint="c0", encoder_fingerprint="t0", size=7) is None
    (tmp_path / ".v3-rank0-of-1.saving-abc").mkdir()  # an interrupted save's leftover is not a version
    assert saved_vectors(tmp_path, corpus_fingerprint="c0", encoder_fingerprint="t0", size=6)[1] == "v0, 1 shard(s)"
