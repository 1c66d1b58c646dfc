"""benchmarks.corpus_memory: runs list and mapped corpora on 1 and 2 gloo ranks and writes the JSON it prints."""

import json

import pytest

from rag_e2e.benchmarks import corpus_memory


@pytest.mark.distributed
def test_a_small_run_writes_both_modes_and_their_ratio(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert corpus_memory.main(["sizes=3000,6000", "list_max=3000", "lookups=300", "ranks=1,2", "words=20",
                               f"work={tmp_path / 'work'}", f"out={out}"]) == 0
    result = json.loads(out.read_text())
    runs = {(r["passages"], r["mode"], r["ranks"]): r for r in result["runs"]}
    assert set(runs) == {(n, m, w) for n in (3000, 6000) for m in ("list", "mapped") for w in (1, 2)}
    assert runs[(6000, "list", 2)]["skipped"] == "above list_max"
    for world in (1, 2):
        mapped, listed = runs[(3000, "mapped", world)], runs[(3000, "list", world)]
        assert len(mapped["per_rank"]) == world and mapped["anon_mb"] < listed["anon_mb"]
    assert set(result["ratio_mapped_over_list"]) == {"3000 passages, 1 ranks", "3000 passages, 2 ranks"}
    assert "mapped / list per rank at 3000 passages, 2 ranks" in capsys.readouterr().out


def test_a_bad_option_is_one_line(capsys):
    with pytest.raises(SystemExit) as done:
        corpus_memory.main(["sizes=many"])
    assert done.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
