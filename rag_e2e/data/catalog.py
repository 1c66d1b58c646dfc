"""The public datasets `rag-e2e data get NAME` writes under the data root, in the layouts the configs read.

Each dataset is its upstream files (official URLs with their published sha256 where one exists, or a Hugging Face
Hub dataset) and the local files made from them, named relative to the data root (`data.root`, env RAG_E2E_DATA,
default ./data). The files keep the upstream formats the loaders read (SQuAD JSON, NQ-open JSONL, DPR TSV), so a
local copy someone already has and a fresh download give the same run.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from rag_e2e import atomic
from rag_e2e.config import DATA_ROOT_DEFAULT, DATA_ROOT_ENV
from rag_e2e.data.download import Upstream, fetched
from rag_e2e.errors import ConfigError
from rag_e2e.files import sha256_of

SQUAD_DEV = Upstream("https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json",
                     "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9")
_NQ = "https://raw.githubusercontent.com/google-research-datasets/natural-questions/master/nq_open/"
NQ_DEV = Upstream(_NQ + "NQ-open.dev.jsonl", "f15567f38099f3615f5b8a685c0aef449c11ad90d3da3735e8d1b98115b40616")
NQ_TRAIN = Upstream(_NQ + "NQ-open.train.jsonl")
COVID_QA = Upstream("https://raw.githubusercontent.com/deepset-ai/COVID-QA/master/data/question-answering/"
                    "200423_covidQA.json")
# The half this project tunes on (articles at even positions); the results in the README were measured on it.
COVID_QA_PUBLIC_SHA256 = "c19bf49d2c25e66e37583023e92d8b53f6f91bf04eacbf7c16358662f086e550"
PSGS_W100 = Upstream("https://dl.fbaipublicfiles.com/dpr/wikipedia_split/psgs_w100.tsv.gz")
TRIVIA_QA_HUB = ("mandarjoshi/trivia_qa", "unfiltered.nocontext")  # DPR's open TriviaQA: train, test = validation


def data_root(root: str | Path | None = None) -> Path:
    """`root`, else $RAG_E2E_DATA, else ./data: the same default as the configs' `data.root`."""
    return Path(root if root is not None else os.environ.get(DATA_ROOT_ENV) or DATA_ROOT_DEFAULT).expanduser()


@dataclass(frozen=True)
class Dataset:
    name: str
    about: str  # what it is, where from, its license
    files: tuple[str, ...]  # what it writes, relative to the data root
    make: Callable[[Path, Path | None], None]  # (root, local copy or None) -> writes `files`


def _squad(root: Path, source: Path | None) -> None:
    out = root / "squad-v1.1-dev" / "dev-v1.1.json.zip"
    with fetched(SQUAD_DEV, out.parent, source) as path:
        def write(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
                z.write(path, SQUAD_DEV.name)
        atomic.write_file(out, write)


def _copy(upstream: Upstream, out: Path, source: Path | None) -> None:
    with fetched(upstream, out.parent, source) as path:
        atomic.write_file(out, lambda tmp: shutil.copyfile(path, tmp))


def _nq_open(root: Path, source: Path | None) -> None:
    for upstream in (NQ_DEV, NQ_TRAIN):
        _copy(upstream, root / "nq-open" / upstream.name, source)


def covid_qa_halves(doc: dict) -> tuple[dict, dict]:
    """The public half (articles at even positions of the 2020-04-23 file) and the held-back half (odd)."""
    return ({**doc, "data": doc["data"][0::2]}, {**doc, "data": doc["data"][1::2]})


def _covid_qa(root: Path, source: Path | None) -> None:
    folder = root / "covid-qa"
    with fetched(COVID_QA, folder, source) as path:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        public, held_back = covid_qa_halves(doc)
        atomic.write_files(folder, {
            COVID_QA.name: lambda tmp: shutil.copyfile(path, tmp),
            "covid-qa-public.json": lambda tmp: tmp.write_text(json.dumps(public), encoding="utf-8"),
            "covid-qa-heldout.json": lambda tmp: tmp.write_text(json.dumps(held_back), encoding="utf-8"),
        })
    if (got := sha256_of(folder / "covid-qa-public.json")) != COVID_QA_PUBLIC_SHA256:
        print(f"warning: covid-qa-public.json has sha256 {got}, not the {COVID_QA_PUBLIC_SHA256[:12]}... the "
              "README's COVID-QA results were measured on: the upstream file has changed since")


def _psgs_w100(root: Path, source: Path | None) -> None:
    out = root / "wiki" / "psgs_w100.tsv"
    with fetched(PSGS_W100, out.parent, source) as path:
        def write(tmp: Path) -> None:
            with gzip.open(path, "rb") as packed, open(tmp, "wb") as f:
                shutil.copyfileobj(packed, f, 1 << 20)  # streamed: 13 GB unpacked
        atomic.write_file(out, write)


def trivia_qa_rows(rows: Iterable[dict]) -> Iterable[str]:
    """Hub TriviaQA rows as NQ-open JSONL lines: the question and every alias of its answer (value first)."""
    for row in rows:
        answer = row["answer"]
        answers = list(dict.fromkeys([answer["value"], *answer["aliases"]]))
        yield json.dumps({"question": row["question"], "answer": answers}, ensure_ascii=False) + "\n"


def _trivia_qa(root: Path, source: Path | None) -> None:
    from rag_e2e.extras import require

    require("data", "rag-e2e data get trivia_qa")
    import datasets

    repo, config = TRIVIA_QA_HUB
    for split, name in (("train", "trivia-train.jsonl"), ("validation", "trivia-test.jsonl")):
        rows = datasets.load_dataset(repo, config, split=split)

        def write(tmp: Path, rows=rows) -> None:
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(trivia_qa_rows(rows))
        atomic.write_file(root / "trivia-qa" / name, write)


DATASETS = {d.name: d for d in (
    Dataset("squad", "SQuAD v1.1 dev, the official file (rajpurkar.github.io; CC BY-SA 4.0)",
            ("squad-v1.1-dev/dev-v1.1.json.zip",), _squad),
    Dataset("nq_open", "NQ-open train and dev (google-research-datasets/natural-questions; CC BY-SA 3.0)",
            ("nq-open/NQ-open.dev.jsonl", "nq-open/NQ-open.train.jsonl"), _nq_open),
    Dataset("covidqa", "COVID-QA, 2020-04-23 file, and its public/held-back halves (deepset-ai/COVID-QA; Apache-2.0)",
            ("covid-qa/200423_covidQA.json", "covid-qa/covid-qa-public.json", "covid-qa/covid-qa-heldout.json"),
            _covid_qa),
    Dataset("trivia_qa", "TriviaQA open (unfiltered, no context) from the HF Hub, as NQ-open JSONL (Apache-2.0)",
            ("trivia-qa/trivia-train.jsonl", "trivia-qa/trivia-test.jsonl"), _trivia_qa),
    Dataset("psgs_w100", "DPR's 21M-passage Wikipedia (Dec 2018), 100-word passages, TSV (CC BY-SA 3.0; 13 GB)",
            ("wiki/psgs_w100.tsv",), _psgs_w100),
)}


def get(name: str, root: str | Path | None = None, source: str | Path | None = None,
        force: bool = False) -> tuple[list[Path], bool]:
    """Write dataset `name` under the data root (skipped when its files are there, unless `force`).

    Returns:
        the dataset's files, and whether they were written now (False: they were there already).

    Args:
        name: a key of DATASETS.
        root: the data root (default: $RAG_E2E_DATA, else ./data).
        source: a local copy of the upstream file(s) to use instead of the network: a file, or a folder searched for
            each upstream file by name (a `.zip` holding it also works, e.g. SQuAD's dev-v1.1.json.zip).
        force: fetch again even when the files exist.
    """
    if name not in DATASETS:
        raise ConfigError(f"no dataset {name!r} (available: {', '.join(DATASETS)})")
    dataset, root = DATASETS[name], data_root(root)
    paths = [root / f for f in dataset.files]
    if not force and all(p.is_file() for p in paths):
        return paths, False
    dataset.make(root, Path(source).expanduser() if source is not None else None)
    return paths, True


def fetch_hint(path: str | Path) -> str | None:
    """For a missing file that a dataset here writes: the command that writes it."""
    wanted = Path(path).as_posix()
    for dataset in DATASETS.values():
        if any(wanted.endswith("/" + f) or wanted == f for f in dataset.files):
            return (f"`rag-e2e data get {dataset.name}` writes it under the data root (data.root=DIR, or "
                    f"{DATA_ROOT_ENV}=DIR where you keep the data; default ./{DATA_ROOT_DEFAULT})")
    return None
