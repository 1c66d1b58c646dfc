"""Every index kind: search against float64 references, memmapped vectors, save/load and refusing mismatches."""

import json
import os

import numpy as np
import pytest
import torch

from rag_e2e.data.types import Passage
from rag_e2e.errors import RagE2EError
from rag_e2e.retrieval import index_io
from rag_e2e.retrieval.exact_index import ExactIndex
from rag_e2e.retrieval.index import (
    IndexMeta,
    IndexMismatchError,
    build_index,
    corpus_fingerprint,
    load_index,
    save_index,
    state_fingerprint,
)

KINDS = ["exact", "faiss_flat", "ivf_flat", "ivf_pq", "hnsw"]
EXACT_KINDS = ["exact", "faiss_flat"]


def _clustered(n: int, centers: torch.Tensor) -> torch.Tensor:
    """n vectors around random rows of centers (C, d), noise 0.3 per coordinate."""
    return centers[torch.randint(len(centers), (n,))] + 0.3 * torch.randn(n, centers.shape[1])


def _recall(rows: torch.Tensor, ref_rows: torch.Tensor) -> float:
    return np.mean([len(set(a.tolist()) & set(b.tolist())) / len(b) for a, b in zip(rows, ref_rows)])


def _memmap(tmp_path, values: np.ndarray) -> np.memmap:
    out = np.lib.format.open_memmap(tmp_path / "p_reps.npy", mode="w+", dtype=values.dtype, shape=values.shape)
    out[:] = values
    out.flush()
    return np.load(tmp_path / "p_reps.npy", mmap_mode="r")


def _meta(index, corpus="corpus-a", encoder="enc-a", step=0) -> IndexMeta:
    return IndexMeta.for_index(index, corpus_fingerprint=corpus, encoder_fingerprint=encoder, encoder_step=step)


@pytest.mark.parametrize("kind", EXACT_KINDS)
@pytest.mark.parametrize(("n", "d", "k"), [(97, 33, 5), (10, 8, 10), (300, 64, 1)])
def test_exact_kinds_match_float64_reference(kind, n, d, k):
    p_reps, q_reps = torch.randn(n, d), torch.randn(7, d)
    index = build_index(kind, p_reps)
    scores, rows = index.search(q_reps, k)
    ref = q_reps.double() @ p_reps.double().T  # (7, n)
    ref_scores = ref.topk(k, dim=1).values
    assert scores.dtype == torch.float32 and rows.dtype == torch.int64 and rows.shape == (7, k)
    torch.testing.assert_close(scores.double(), ref_scores, rtol=1e-5, atol=1e-5)  # fp32 accumulation
    torch.testing.assert_close(ref.gather(1, rows), ref_scores, rtol=1e-5, atol=1e-5)  # right rows, ties aside
    assert torch.equal(index.gather(rows), p_reps[rows])
    s2, r2, vecs = index.search_with_vectors(q_reps, k)
    assert torch.equal(s2, scores) and torch.equal(r2, rows) and torch.equal(vecs, p_reps[rows])


@pytest.mark.parametrize(("kind", "min_recall"), [("ivf_flat", 0.9), ("hnsw", 0.9), ("ivf_pq", 0.5)])
def test_approximate_kinds_recall_on_clustered_data(kind, min_recall):
    # 2000 vectors from 50 clusters, default params but 6-bit PQ (training 2**8 centroids per sub-quantizer is the
    # slow part). Measured minima over 30 seeds: 1.0 (ivf_flat, hnsw), 0.69 (ivf_pq; 0.82 with 8 bits).
    centers = torch.randn(50, 32)
    p_reps, q_reps = _clustered(2000, centers), _clustered(64, centers)
    index = build_index(kind, p_reps, pq_bits=6)
    scores, rows = index.search(q_reps, 10)
    ref_rows = (q_reps.double() @ p_reps.double().T).topk(10, dim=1).indices
    assert scores.dtype == torch.float32 and rows.dtype == torch.int64 and rows.shape == (64, 10)
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    assert _recall(rows, ref_rows) >= min_recall


@pytest.mark.filterwarnings("ignore:ivf_pq")
@pytest.mark.parametrize("kind", KINDS)
def test_tiny_corpus_returns_every_row_once(kind):
    # N=12: IVF falls to nlist=1, PQ to 3 bits; k=N asks for the whole corpus.
    p_reps, q_reps = torch.randn(12, 8), torch.randn(3, 8)
    scores, rows = build_index(kind, p_reps, pq_m=4).search(q_reps, 12)
    assert torch.equal(rows.sort(dim=1).values, torch.arange(12).expand(3, 12))


def test_ivf_pq_lowers_bits_for_tiny_corpus_with_a_warning():
    with pytest.warns(UserWarning, match="index.pq_bits"):
        index = build_index("ivf_pq", torch.randn(40, 8), pq_m=4, pq_bits=8)
    assert index.params["pq_bits"] == 5 and index.params["nlist"] == 1  # floor(log2(40)), 40 // 39


def test_ivf_pq_refuses_pq_m_not_dividing_dim():
    with pytest.raises(ValueError, match="index.pq_m"):
        build_index("ivf_pq", torch.randn(100, 10), pq_m=4)


def test_ivf_queries_faiss_cannot_fill_fall_back_to_exact():
    # 10 lists of ~40 vectors, one probed: k=60 leaves FAISS short (row -1) for every query.
    p_reps, q_reps = torch.randn(400, 8), torch.randn(5, 8)
    index = build_index("ivf_flat", p_reps, nlist=10, nprobe=1)
    _, faiss_rows = index._faiss.search(q_reps.numpy(), 60)
    assert (faiss_rows < 0).any(axis=1).all()
    scores, rows = index.search(q_reps, 60)
    ref = (q_reps.double() @ p_reps.double().T).topk(60, dim=1)
    torch.testing.assert_close(scores.double(), ref.values, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ref.values, (q_reps.double() @ p_reps.double().T).gather(1, rows), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", [0, 5])
def test_out_of_range_k_is_refused(kind, k):
    index = build_index(kind, torch.randn(4, 8), pq_m=4, pq_bits=2)
    with pytest.raises(ValueError, match=f"k={k}"):
        index.search(torch.randn(2, 8), k)


def test_empty_corpus_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        build_index("exact", torch.zeros(0, 8))


def test_exact_over_fp16_memmap_merges_blocks_like_the_tensor_index(tmp_path):
    p16 = np.random.randn(500, 16).astype(np.float16)
    q_reps = torch.randn(4, 16)
    on_disk = ExactIndex(_memmap(tmp_path, p16), block_rows=97)  # 6 blocks, the last one short
    in_ram = ExactIndex(torch.from_numpy(p16).float())
    scores, rows = on_disk.search(q_reps, 7)
    ref_scores, ref_rows = in_ram.search(q_reps, 7)
    assert torch.equal(rows, ref_rows)
    torch.testing.assert_close(scores, ref_scores, rtol=1e-6, atol=1e-6)  # same fp32 products, other blocking
    vecs = on_disk.gather(rows)
    assert vecs.dtype == torch.float32 and torch.equal(vecs, in_ram.gather(rows))


def test_exact_over_memmap_ranks_equal_scores_smaller_row_first(tmp_path):
    # Small integers: every score is exact in fp32, and many tie across blocks.
    p_int = np.random.randint(-2, 3, size=(300, 6)).astype(np.float16)
    q_int = torch.randint(-2, 3, (5, 6)).float()
    scores, rows = ExactIndex(_memmap(tmp_path, p_int), block_rows=64).search(q_int, 20)
    ref = q_int.double().numpy() @ p_int.astype(np.float64).T  # (5, 300)
    ref_rows = [np.lexsort((np.arange(300), -row))[:20] for row in ref]  # score descending, then row ascending
    assert torch.equal(rows, torch.from_numpy(np.stack(ref_rows)))


@pytest.mark.parametrize("kind", ["faiss_flat", "ivf_flat"])
def test_faiss_over_memmap_matches_float64_reference(tmp_path, kind):
    p16 = np.random.randn(300, 16).astype(np.float16)
    q_reps = torch.randn(4, 16)
    scores, rows = build_index(kind, _memmap(tmp_path, p16), nlist=4, nprobe=4).search(q_reps, 5)  # all lists: exact
    ref = (q_reps.double() @ torch.from_numpy(p16).double().T).topk(5, dim=1)
    torch.testing.assert_close(scores.double(), ref.values, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:ivf_pq")
@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_saved_index_loads_with_identical_results(tmp_path, kind, mmap):
    p_reps, q_reps = torch.randn(200, 16), torch.randn(3, 16)
    index = build_index(kind, p_reps, pq_m=4)
    save_index(index, tmp_path / "index", _meta(index, step=7))
    loaded, meta = load_index(tmp_path / "index", corpus_fingerprint="corpus-a", encoder_fingerprint="enc-a",
                              dim=16, mmap=mmap)  # fmt: skip
    assert (meta.kind, meta.size, meta.dim, meta.encoder_step, meta.params) == (kind, 200, 16, 7, index.params)
    assert isinstance(loaded.p_reps, np.memmap) == mmap
    for got, want in zip(loaded.search_with_vectors(q_reps, 5), index.search_with_vectors(q_reps, 5)):
        assert torch.equal(got, want)
    assert sorted(os.listdir(tmp_path)) == ["index"]  # no temporary directory left behind


@pytest.mark.parametrize("kind", KINDS)
def test_load_refuses_other_corpus_encoder_or_dim(tmp_path, kind):
    index = build_index(kind, torch.randn(100, 8), pq_m=4, pq_bits=6)
    path = save_index(index, tmp_path / "index", _meta(index))
    cases = [
        (dict(corpus_fingerprint="corpus-b"), "corpus fingerprint mismatch: expected 'corpus-b', found 'corpus-a'"),
        (dict(corpus_fingerprint="corpus-a", encoder_fingerprint="enc-b"),
         "encoder fingerprint mismatch: expected 'enc-b', found 'enc-a'"),
        (dict(corpus_fingerprint="corpus-a", dim=16), "dim mismatch: expected 16, found 8"),
    ]  # fmt: skip
    for kwargs, message in cases:
        with pytest.raises(IndexMismatchError, match=message) as err:
            load_index(path, **kwargs)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_load_refuses_tampered_or_incomplete_directory(tmp_path):
    index = build_index("ivf_flat", torch.randn(100, 8))
    path = save_index(index, tmp_path / "index", _meta(index))
    np.save(path / "vectors.npy", np.zeros((100, 9), dtype=np.float32))
    with pytest.raises(IndexMismatchError, match=r"dim \(meta.json vs vectors.npy\) mismatch: expected 8, found 9"):
        load_index(path, corpus_fingerprint="corpus-a")
    (path / "faiss.index").unlink()
    np.save(path / "vectors.npy", np.zeros((100, 8), dtype=np.float32))
    with pytest.raises(IndexMismatchError, match="missing file faiss.index"):
        load_index(path, corpus_fingerprint="corpus-a")
    assert issubclass(IndexMismatchError, RagE2EError)


@pytest.mark.parametrize("kind", ["exact", "ivf_flat"])
def test_interrupted_save_leaves_no_index_and_keeps_the_previous_one(tmp_path, kind, monkeypatch):
    path = tmp_path / "index"
    index = build_index(kind, torch.randn(100, 8))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(index_io, "_write_meta", interrupted)  # vectors (and faiss.index) already written
        with pytest.raises(KeyboardInterrupt):
            save_index(index, path, _meta(index))
    assert os.listdir(tmp_path) == []

    save_index(index, path, _meta(index, step=1))
    newer = build_index(kind, torch.randn(100, 8))
    with monkeypatch.context() as patch:
        patch.setattr(index_io, "_write_meta", interrupted)
        with pytest.raises(KeyboardInterrupt):
            save_index(newer, path, _meta(newer, step=2))
    renames = []

    def second_rename_fails(src, dst):  # the new directory cannot be renamed in: the old one must come back
        renames.append(dst)
        if len(renames) == 2:
            raise OSError("disk gone")
        os.rename(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(index_io.os, "rename", second_rename_fails)
        with pytest.raises(OSError, match="disk gone"):
            save_index(newer, path, _meta(newer, step=2))
    assert os.listdir(tmp_path) == ["index"]
    loaded, meta = load_index(path, corpus_fingerprint="corpus-a")
    assert meta.encoder_step == 1 and torch.equal(loaded.gather(torch.arange(100)[None]), index.p_reps[None])


def test_save_refuses_a_directory_that_is_not_an_index(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    index = build_index("exact", torch.randn(10, 4))
    with pytest.raises(ValueError, match="not a saved index"):
        save_index(index, tmp_path / "notes", _meta(index))
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_meta_json_has_no_pickle_and_round_trips(tmp_path):
    index = build_index("hnsw", torch.randn(50, 8), hnsw_m=8, ef_search=20)
    path = save_index(index, tmp_path / "index", _meta(index))
    meta = json.loads((path / "meta.json").read_text())
    assert meta["params"] == {"hnsw_m": 8, "ef_search": 20} and meta["metric"] == "ip"
    assert sorted(os.listdir(path)) == ["faiss.index", "meta.json", "vectors.npy"]


def test_corpus_fingerprint_sees_every_field_and_the_order():
    passages = [Passage("1", "alpha", "A"), Passage("2", "beta", "B")]
    fingerprint = corpus_fingerprint(passages)
    assert fingerprint == corpus_fingerprint(list(passages)) and len(fingerprint) == 16
    changed = [
        [Passage("1", "alpha", "A"), Passage("3", "beta", "B")],
        [Passage("1", "alpha", "A"), Passage("2", "beta!", "B")],
        [Passage("1", "alpha", "A"), Passage("2", "beta", "")],
        [Passage("1", "alphaB", "A"), Passage("2", "", "B")],  # moving text across a boundary
        passages[::-1],
    ]
    assert len({fingerprint, *map(corpus_fingerprint, changed)}) == len(changed) + 1


def test_state_fingerprint_sees_values_names_and_dtypes():
    module = torch.nn.Linear(4, 3)
    fingerprint = state_fingerprint(module)
    assert fingerprint == state_fingerprint(dict(reversed(module.state_dict().items())))
    with torch.no_grad():
        module.bias[0] += 1e-3
    assert state_fingerprint(module) != fingerprint
    state = {"w": torch.zeros(2)}
    assert len({state_fingerprint(state), state_fingerprint({"v": torch.zeros(2)}),
                state_fingerprint({"w": torch.zeros(2, dtype=torch.bfloat16)})}) == 3  # fmt: skip
