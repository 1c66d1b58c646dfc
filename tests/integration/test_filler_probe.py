"""experiments/analysis/filler_probe.py on two tiny filler runs: query-side leaves the passage tower as it was, so
its probe is unchanged; end to end moves it, and the probe sees the move."""

import json
import runpy

from helpers import REPO, tiny_config

from rag_e2e.train import train

PROBE = runpy.run_path(str(REPO / "experiments" / "analysis" / "filler_probe.py"))


def test_filler_probe_compares_untrained_and_trained_passage_towers(tmp_path, capsys):
    common = ["data.synthetic.filler_sentences=2", "model.reader_warmup_steps=0", "model.passage_lr=1e-2",
              "trainer.max_steps=6", "trainer.val_check_interval=100", "eval.ks=[1,3]", "logger.csv=false"]
    runs = [train(tiny_config(*common, *mode, f"run_dir={tmp_path / name}"), progress=False).parent
            for name, mode in (("qs", []), ("e2e", ["retriever=end2end", "refresh=stale"]))]
    out = tmp_path / "probe.json"
    assert PROBE["main"]([*map(str, runs), f"out={out}"]) == 0
    qs, e2e = json.loads(out.read_text())
    assert (qs["train_passage_encoder"], e2e["train_passage_encoder"]) == (False, True)
    assert qs["trained"] == qs["untrained"] == e2e["untrained"]  # same initial tower; query-side never moves it
    assert e2e["trained"] != e2e["untrained"] and 0.0 <= e2e["trained"] <= 1.0
    assert "fact->own" in capsys.readouterr().out
