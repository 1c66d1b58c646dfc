"""rag-e2e data get: the public datasets, fetched (here from local files and a loopback server) into the data root."""

import hashlib
import http.server
import json
import sys
import threading
import types
import zipfile
from importlib.machinery import ModuleSpec

import pytest
from helpers import SHARED_DATA, SQUAD_DEV

from rag_e2e.cli import main
from rag_e2e.compose import compose
from rag_e2e.data import catalog
from rag_e2e.data.download import Upstream
from rag_e2e.data.qa import load_nq_open, load_squad
from rag_e2e.data.sources import load_data
from rag_e2e.errors import ConfigError, DataFormatError

COVID_PUBLIC = SHARED_DATA / "covid-qa" / "covid-qa-public.json"
needs_squad = pytest.mark.skipif(not SQUAD_DEV.is_file(), reason=f"SQuAD v1.1 dev not found at {SQUAD_DEV}")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server over tmp_path/served; yields its base URL."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def _leftovers(folder):
    return [p.name for p in folder.rglob(".*")]


@needs_squad
def test_squad_from_the_local_zip_loads_the_same_as_the_original(tmp_path):
    assert main(["data", "get", "squad", f"root={tmp_path}", f"from={SQUAD_DEV.parent}"]) == 0
    out = tmp_path / "squad-v1.1-dev" / "dev-v1.1.json.zip"
    with zipfile.ZipFile(out) as z, zipfile.ZipFile(SQUAD_DEV) as original:
        assert z.namelist() == ["dev-v1.1.json"]
        assert z.read("dev-v1.1.json") == original.read("dev-v1.1.json")
    assert _sha(zipfile.ZipFile(out).read("dev-v1.1.json")) == catalog.SQUAD_DEV.sha256
    # what the configs read: data=squad under the new root equals the original file, passage for passage
    ours = load_data(compose(["data=squad", f"data.root={tmp_path}"]).data)
    questions, passages = load_squad(SQUAD_DEV)
    assert ours.corpus == passages and len(passages) == 2067
    assert sorted(q.qid for q in ours.train + ours.dev + ours.test) == sorted(q.qid for q in questions)
    assert _leftovers(tmp_path) == []


def test_a_file_with_the_wrong_hash_writes_nothing(tmp_path):
    fake = tmp_path / "dev-v1.1.json"
    fake.write_text('{"data": []}')
    with pytest.raises(ConfigError, match=r"sha256 [0-9a-f]{64}, expected 95aa6a52") as err:
        catalog.get("squad", tmp_path / "root", fake)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "root" / "squad-v1.1-dev" / "dev-v1.1.json.zip").exists()
    assert _leftovers(tmp_path / "root") == []


def test_nq_open_downloads_over_http_and_checks_the_hash(tmp_path, server, monkeypatch):
    served, base = server
    dev = b'{"question": "who wrote hamlet", "answer": ["Shakespeare"]}\n'
    train = b'{"question": "capital of france", "answer": ["Paris"]}\n' * 3
    (served / "NQ-open.dev.jsonl").write_bytes(dev)
    (served / "NQ-open.train.jsonl").write_bytes(train)
    monkeypatch.setattr(catalog, "NQ_DEV", Upstream(base + "NQ-open.dev.jsonl", _sha(dev)))
    monkeypatch.setattr(catalog, "NQ_TRAIN", Upstream(base + "NQ-open.train.jsonl"))  # no published hash
    paths, fetched = catalog.get("nq_open", tmp_path / "root")
    assert fetched and [p.read_bytes() for p in paths] == [dev, train]
    assert [ex.answers for ex in load_nq_open(paths[0])] == [("Shakespeare",)]
    assert catalog.get("nq_open", tmp_path / "root") == (paths, False)  # there already: nothing fetched

    (served / "NQ-open.dev.jsonl").write_bytes(dev + b"tampered")
    with pytest.raises(ConfigError, match="expected"):
        catalog.get("nq_open", tmp_path / "root", force=True)
    assert paths[0].read_bytes() == dev  # the previous file is intact
    assert _leftovers(tmp_path / "root") == []


def test_an_unreachable_url_is_one_line_naming_from(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog, "PSGS_W100", Upstream("http://127.0.0.1:9/psgs_w100.tsv.gz"))
    with pytest.raises(ConfigError, match=r"psgs_w100.tsv.gz: cannot download .*from=") as err:
        catalog.get("psgs_w100", tmp_path)
    assert "\n" not in str(err.value) and _leftovers(tmp_path) == []


def test_psgs_w100_is_unpacked_streaming(tmp_path):
    import gzip

    tsv = "id\ttext\ttitle\n1\tAaron is a prophet.\tAaron\n2\tAbba was a band.\tABBA\n"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "psgs_w100.tsv.gz").write_bytes(gzip.compress(tsv.encode()))
    paths, _ = catalog.get("psgs_w100", tmp_path / "root", tmp_path / "src")
    assert paths[0].read_text() == tsv


def test_covid_qa_halves_split_by_article_position():
    doc = {"version": "v1.0", "data": [{"paragraphs": [], "n": i} for i in range(5)]}
    public, held_back = catalog.covid_qa_halves(doc)
    assert [a["n"] for a in public["data"]] == [0, 2, 4] and [a["n"] for a in held_back["data"]] == [1, 3]
    assert public["version"] == held_back["version"] == "v1.0"


@pytest.mark.skipif(not COVID_PUBLIC.is_file(), reason="COVID-QA's public half is not in ../shared/data")
def test_covid_qa_public_half_is_rebuilt_byte_for_byte(tmp_path, capsys):
    # The upstream file is not here; one with the public half's articles at even positions and others between them
    # stands in for it. The derived public half must be the very file the README's results were measured on.
    public = json.loads(COVID_PUBLIC.read_text())
    others = [{"paragraphs": [{"context": f"held back {i}", "qas": []}], "title": ""} for i in range(48)]
    articles = [a for pair in zip(public["data"], others + [None]) for a in pair if a is not None]
    upstream = tmp_path / "200423_covidQA.json"
    upstream.write_text(json.dumps({"version": public["version"], "data": articles}))
    paths, _ = catalog.get("covidqa", tmp_path / "root", upstream)
    assert [p.name for p in paths] == ["200423_covidQA.json", "covid-qa-public.json", "covid-qa-heldout.json"]
    assert paths[1].read_bytes() == COVID_PUBLIC.read_bytes()
    assert "warning" not in capsys.readouterr().out
    assert len(json.loads(paths[2].read_text())["data"]) == 48


def test_trivia_qa_comes_from_the_hub_as_nq_open_lines(tmp_path, monkeypatch):
    rows = {"train": [{"question": "Q1?", "answer": {"value": "Paris", "aliases": ["Paris", "paris, france"]}}],
            "validation": [{"question": "Q2?", "answer": {"value": "7", "aliases": ["seven"]}}]}
    calls = []

    def load_dataset(repo, config, split):
        calls.append((repo, config, split))
        return rows[split]

    fake = types.ModuleType("datasets")
    fake.__spec__ = ModuleSpec("datasets", None)
    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    paths, _ = catalog.get("trivia_qa", tmp_path)
    assert calls == [("mandarjoshi/trivia_qa", "unfiltered.nocontext", "train"),
                     ("mandarjoshi/trivia_qa", "unfiltered.nocontext", "validation")]
    assert [ex.answers for ex in load_nq_open(paths[0])] == [("Paris", "paris, france")]
    assert [ex.answers for ex in load_nq_open(paths[1])] == [("7", "seven")]


def test_configs_read_the_data_root_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_E2E_DATA", str(tmp_path))
    assert compose(["data=covidqa"]).data.qa_path == f"{tmp_path}/covid-qa/covid-qa-public.json"
    monkeypatch.delenv("RAG_E2E_DATA")
    assert compose(["data=squad"]).data.qa_path == "data/squad-v1.1-dev/dev-v1.1.json.zip"
    assert compose(["data=squad", "data.root=/x"]).data.qa_path == "/x/squad-v1.1-dev/dev-v1.1.json.zip"


@pytest.mark.parametrize("group,dataset", [("squad", "squad"), ("covidqa", "covidqa")])
def test_a_missing_dataset_file_names_the_command_that_fetches_it(tmp_path, group, dataset):
    cfg = compose([f"data={group}", f"data.root={tmp_path}"]).data
    with pytest.raises(DataFormatError, match=rf"file not found \(`data.qa_path`\); `rag-e2e data get {dataset}`"):
        load_data(cfg)


def test_a_missing_file_of_ones_own_has_no_fetch_hint(tmp_path):
    cfg = compose(["data=files", f"data.qa_path={tmp_path}/q.jsonl", f"data.corpus_path={tmp_path}/c.jsonl"]).data
    with pytest.raises(DataFormatError, match=r"c.jsonl: file not found \(`data.corpus_path`\)$"):
        load_data(cfg)


def test_cli_lists_and_refuses_bad_arguments(capsys):
    assert main(["data", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in catalog.DATASETS) and "covid-qa/covid-qa-public.json" in listed
    assert main(["data", "get", "nope"]) == 2
    assert "no dataset 'nope' (available: squad, nq_open" in capsys.readouterr().err
    assert main(["data"]) == 2 and "usage: rag-e2e data get" in capsys.readouterr().err
