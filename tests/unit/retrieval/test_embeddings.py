"""Out-of-core encoding: shards on disk, resuming after an interruption, refusing mismatched directories."""

import json

import numpy as np
import pytest
import torch

from rag_e2e.errors import RagE2EError
from rag_e2e.retrieval.embeddings import encode_to_memmap, load_embeddings
from rag_e2e.retrieval.index import build_index

N, DIM, SHARD = 50, 8, 10  # 5 shards


def _corpus() -> tuple[int, torch.Tensor]:
    """N rows whose vectors are a fixed random table: an encoder that needs no model."""
    return N, torch.randn(N, DIM)


def _encoder(table: torch.Tensor, fail_from: int | None = None, seen: list | None = None):
    def encode_rows(lo: int, hi: int) -> torch.Tensor:
        if fail_from is not None and hi > fail_from:
            raise RuntimeError("encoder crashed")
        if seen is not None:
            seen.extend(range(lo, hi))
        return table[lo:hi]

    return encode_rows


def _encode(encode_rows, size, out_dir, **overrides):
    kwargs = dict(dim=DIM, shard_size=SHARD, batch_size=4, fingerprint="fp", progress=False) | overrides
    return encode_to_memmap(encode_rows, size, out_dir, **kwargs)


def test_interrupted_run_resumes_only_the_missing_shards(tmp_path):
    size, table = _corpus()
    with pytest.raises(RuntimeError, match="encoder crashed"):
        _encode(_encoder(table, fail_from=2 * SHARD), size, tmp_path)  # fails in the 3rd shard
    assert json.loads((tmp_path / "progress.json").read_text())["done"] == [0, 1]
    with pytest.raises(RagE2EError, match="3 of 5 shards are not encoded"):
        load_embeddings(tmp_path)

    seen = []
    array = _encode(_encoder(table, seen=seen), size, tmp_path)
    assert sorted(seen) == list(range(2 * SHARD, N))
    assert isinstance(array, np.memmap) and array.dtype == np.float16 and not array.flags.writeable
    # Equal to direct encoding rounded to fp16 (numpy and torch both round to nearest even): relative error <= 2**-11.
    assert np.array_equal(array, table.half().numpy())
    torch.testing.assert_close(torch.from_numpy(np.array(array)).float(), table, rtol=2**-11, atol=1e-4)
    assert np.array_equal(load_embeddings(tmp_path, fingerprint="fp"), array)


@pytest.mark.parametrize(("field", "override"), [("dim", dict(dim=16)), ("fingerprint", dict(fingerprint="other")),
                                                 ("dtype", dict(dtype="float32"))])  # fmt: skip
def test_resume_with_other_settings_is_refused_and_keeps_the_files(tmp_path, field, override):
    size, table = _corpus()
    with pytest.raises(RuntimeError):
        _encode(_encoder(table, fail_from=2 * SHARD), size, tmp_path)
    with pytest.raises(RagE2EError, match=f"progress.json: {field} is") as err:
        _encode(_encoder(table), size, tmp_path, **override)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "embeddings.npy", "progress.json"]


def test_finished_directory_is_reused_and_feeds_an_index(tmp_path):
    size, table = _corpus()
    first = _encode(_encoder(table), size, tmp_path, dtype="float32")
    seen = []
    again = _encode(_encoder(table, seen=seen), size, tmp_path, dtype="float32")
    assert seen == [] and np.array_equal(first, again) and np.array_equal(again, table.numpy())
    with pytest.raises(RagE2EError, match="fingerprint is 'fp' but 'other'"):
        load_embeddings(tmp_path, fingerprint="other")
    q_reps = torch.randn(3, DIM)
    scores, rows = build_index("faiss_flat", again).search(q_reps, 4)
    ref = (q_reps.double() @ table.double().T).topk(4, dim=1).values
    torch.testing.assert_close(scores.double(), ref, rtol=1e-5, atol=1e-5)  # float32 table: fp32 accumulation only


def test_wrong_encoder_output_shape_is_refused(tmp_path):
    size, table = _corpus()
    with pytest.raises(ValueError, match=r"expected \(4, dim=8\)"):
        _encode(lambda lo, hi: table[lo:hi, :4], size, tmp_path)


def test_foreign_embeddings_file_is_not_overwritten(tmp_path):
    np.save(tmp_path / "embeddings.npy", np.ones((2, 2)))
    size, table = _corpus()
    with pytest.raises(RagE2EError, match="exists without progress.json"):
        _encode(_encoder(table), size, tmp_path)
    assert np.array_equal(np.load(tmp_path / "embeddings.npy"), np.ones((2, 2)))
