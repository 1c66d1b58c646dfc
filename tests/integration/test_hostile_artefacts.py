"""A pipeline folder, run config or settings file from someone else: one clear error naming the file, never code run
and never a file read from outside the folder."""

import json
import shutil

import pytest
from helpers import tiny_config
from hypothesis import given, settings
from hypothesis import strategies as st

from rag_e2e.compose import load_run_config
from rag_e2e.errors import ConfigError
from rag_e2e.inference.export import pipeline_from_config
from rag_e2e.inference.folder_guard import check_self_contained
from rag_e2e.inference.pipeline import RagPipeline, _read_settings


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline") / "export"
    pipeline_from_config(tiny_config()).save_pretrained(folder)
    return folder


@pytest.fixture
def folder(saved, tmp_path):
    copy = tmp_path / "export"
    shutil.copytree(saved, copy, symlinks=True)
    return copy


def _edit_settings(folder, **changes):
    path = folder / "pipeline.json"
    raw = json.loads(path.read_text())
    raw.update(changes)
    path.write_text(json.dumps(raw))
    return path


def test_the_untouched_folder_loads(folder):
    assert RagPipeline.from_pretrained(folder).index.size == len((folder / "passages.jsonl").read_text().splitlines())


@pytest.mark.parametrize("kwargs", [{"trust_remote_code": True}, {"cache_dir": "/tmp"}, {"add_pooling_layer": "no"}])
def test_settings_cannot_pass_loader_keywords(folder, kwargs):
    path = _edit_settings(folder, encoder_kwargs=kwargs)
    with pytest.raises(ConfigError) as err:
        RagPipeline.from_pretrained(folder)
    assert str(err.value).startswith(f"{path}: field 'encoder_kwargs': {next(iter(kwargs))}=")


def test_a_truncated_settings_file_is_one_line(folder):
    path = folder / "pipeline.json"
    path.write_text(path.read_text()[:40])
    with pytest.raises(ConfigError, match=r"pipeline.json: not valid JSON") as err:
        RagPipeline.from_pretrained(folder)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("entry", ["generator", "query_encoder/config.json", "passages.jsonl"])
def test_a_symlink_out_of_the_folder_is_refused_before_anything_loads(folder, tmp_path, entry):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    link = folder / entry
    target = outside / link.name
    shutil.move(link, target)  # the same content, but outside: still refused
    link.symlink_to(target)
    with pytest.raises(ConfigError) as err:
        RagPipeline.from_pretrained(folder)
    assert str(err.value).startswith(f"{link}: a symlink to {target.resolve()}, outside the pipeline folder")


def test_a_symlink_inside_the_folder_is_allowed_and_a_dangling_one_is_named(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.txt").symlink_to(tmp_path / "a.txt")
    check_self_contained(tmp_path)
    (tmp_path / "c.txt").symlink_to(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match=r"c.txt: a symlink to .*missing.txt, which does not exist"):
        check_self_contained(tmp_path)


def test_a_hydra_target_in_a_run_config_is_refused_and_never_instantiated(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "config.yaml"
    path.write_text(f"_target_: os.system\n_args_: ['touch {marker}']\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert str(err.value).startswith(f"{path}:") and "_target_" in str(err.value)
    nested = tmp_path / "nested.yaml"
    nested.write_text(f"model:\n  _target_: os.system\n  command: touch {marker}\n")
    with pytest.raises(ConfigError, match="_target_"):
        load_run_config(nested)
    assert not marker.exists()


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["encoder_kwargs", "format_version", "k", "add_pooling_layer", "x"]) | st.text(max_size=8),
        children, max_size=4), max_leaves=12).map(lambda v: json.dumps(v).encode())))
def test_fuzzed_settings_files_give_a_dict_or_one_config_error(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("fuzz") / "pipeline.json"
    path.write_bytes(content)
    try:
        raw = _read_settings(path)
    except ConfigError as err:
        assert str(err).startswith(f"{path}:") and "\n" not in str(err)
    else:
        assert isinstance(raw, dict)
