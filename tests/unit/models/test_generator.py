"""Generator inputs/targets and each supported architecture."""

import pytest
import torch

from rag_e2e.models.generator import (
    build_generator,
    decode_answers,
    decoder_start_id,
    encode_answers,
    encode_sources,
    shift_right,
)


def test_shift_right_starts_with_start_token_and_pads_ignored_positions():
    labels = torch.tensor([[5, 6, 7], [8, 2, -100]])
    assert shift_right(labels, start_id=1, pad_id=0).tolist() == [[1, 5, 6], [1, 8, 2]]


@pytest.fixture(scope="module")
def bart():
    return build_generator(None, "minilm", arch="bart", d_model=32, num_layers=1, num_heads=2, ffn_dim=64)


def test_answers_end_with_eos_and_pad_with_ignore_index(bart):
    _, tok = bart
    labels = encode_answers(tok, ["Amber Falcon", "oak"], max_length=8)
    assert labels.shape[0] == 2 and labels[1, -1] == -100
    assert decode_answers(tok, labels.clamp_min(0)) == ["amber falcon", "oak"]
    assert labels[0, 2] == tok.sep_token_id  # [SEP] ends a WordPiece answer


def test_long_passage_is_truncated_never_the_question(bart):
    _, tok = bart
    enc = encode_sources(tok, ["Title"], ["word " * 500], ["where was Tovarin Beskal born?"], max_length=40)
    text = tok.decode(enc["input_ids"][0])
    assert enc["input_ids"].shape[1] == 40 and text.rstrip(" [SEP]").endswith("where was tovarin beskal born?")
    assert text.startswith("[CLS] title / word")


@pytest.mark.parametrize("arch", ["bart", "t5", "bert2bert"])
def test_each_architecture_trains_and_generates(arch):
    model, tok = build_generator(None, "minilm", arch=arch, warm_start="minilm" if arch == "bert2bert" else None,
                                 d_model=32, num_layers=1, num_heads=2, ffn_dim=64)
    src = encode_sources(tok, ["T"], ["Amber Falcon is the town."], ["where?"], max_length=32)
    labels = encode_answers(tok, ["Amber Falcon"], max_length=8)
    logits = model(**src, decoder_input_ids=shift_right(labels, decoder_start_id(model), tok.pad_token_id)).logits
    assert logits.shape[:2] == labels.shape and torch.isfinite(logits).all()
    out = model.generate(**src, max_new_tokens=3, do_sample=False)
    assert out.shape[0] == 1 and out.shape[1] <= 4
