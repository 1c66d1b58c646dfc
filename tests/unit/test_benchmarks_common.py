"""rag_e2e.benchmarks.common: the clock, alternation and medians on a fake clock, percentiles, typed key=value
arguments (one-line errors), device labels, text tables and the atomic result JSON."""

import importlib
import json

import numpy as np
import pytest
import torch

from rag_e2e import atomic
from rag_e2e.benchmarks import common


class FakeClock:
    """A clock that only moves when a timed function says how long it took."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def takes(self, seconds: float, result=None):
        def fn(*args, **kwargs):
            self.now += seconds
            return result if result is not None else (args, kwargs)

        return fn


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(common, "clock", fake)
    return fake


def test_timed_returns_the_result_and_the_seconds_between_two_clock_readings(clock):
    result, seconds = common.timed(clock.takes(2.5), 1, key="v")
    assert result == ((1,), {"key": "v"}) and seconds == 2.5


def test_schedule_rotates_alternates_abba_or_keeps_the_order():
    assert common.schedule("abc", 4) == [list("abc"), list("bca"), list("cab"), list("abc")]
    assert common.schedule(["x", "y"], 3, "abba") == [["x", "y"], ["y", "x"], ["x", "y"]]
    assert common.schedule(["x", "y"], 2, "fixed") == [["x", "y"], ["x", "y"]]
    with pytest.raises(ValueError, match="unknown order"):
        common.schedule(["x"], 1, "random")


def test_time_alternately_discards_warmup_rounds_and_runs_after_outside_the_time(clock):
    calls, after = [], []
    durations = {"a": iter([9.0, 1.0, 2.0, 3.0]), "b": iter([8.0, 5.0, 4.0, 6.0])}  # first of each: the warm-up

    def fn(name):
        def run():
            calls.append(name)
            clock.now += next(durations[name])

        return run

    def measure(name):
        after.append(name)
        clock.now += 1000.0  # time spent here must not count

    times = common.time_alternately({"a": fn("a"), "b": fn("b")}, repeats=3, warmup=1, after=measure)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]  # rotated, the warm-up round included
    assert times == {"a": [1.0, 2.0, 3.0], "b": [5.0, 4.0, 6.0]}
    assert after == calls[2:]  # kept calls only
    assert common.medians(times) == {"a": 2.0, "b": 5.0}


def test_time_alternately_takes_a_timer_of_its_own():
    times = common.time_alternately({"a": lambda: None}, repeats=2, timer=lambda fn: 7.0)
    assert times == {"a": [7.0, 7.0]}


def test_a_median_ignores_one_outlier():
    assert common.medians({"x": [1.0, 1.2, 300.0], "y": [4.0, 2.0]}) == {"x": 1.2, "y": 3.0}


@pytest.mark.parametrize("q", [0, 25, 50, 95, 99, 100])
def test_percentile_is_numpys_linear_one(q):
    values = [0.31, 0.05, 0.9, 0.12, 0.5, 0.77, 0.2]
    assert common.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert common.percentile([4.0], q) == 4.0


def test_options_take_the_type_of_their_default_and_the_rest_keeps_its_order():
    defaults = {"steps": 8, "rate": 0.5, "out": "a.json", "levels": [1.0, 4.0], "names": ["x"], "n": int,
                "threads": list[int]}
    opts, rest = common.parse_options(["data=squad", "steps=3", "levels=2,8.5", "k=4", "names=p,q", "threads=2,1"],
                                      defaults, prog="bench")
    assert opts == {"steps": 3, "rate": 0.5, "out": "a.json", "levels": [2.0, 8.5], "names": ["p", "q"], "n": None,
                    "threads": [2, 1]}
    assert rest == ["data=squad", "k=4"]
    assert common.parse_options(["n=0"], defaults, prog="bench")[0]["n"] == 0  # given 0 is not "not given"


@pytest.mark.parametrize("args, message", [
    (["steps=abc"], "bench: error: steps=abc: expected an integer"),
    (["levels=1,x"], "bench: error: levels=1,x: expected a comma-separated list of numbers"),
    (["steps=2", "k=4"], "bench: error: unknown option k (known: steps, levels)"),
    (["dir", "other"], "bench: error: expected 1 argument without '=', got 2: dir other (--help for usage)"),
    ([], "bench: error: expected 1 argument without '=', got 0 (--help for usage)"),
])
def test_a_bad_argument_is_one_line_and_exit_code_2(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        common.parse_options(args, {"steps": 8, "levels": [1.0]}, prog="bench", positional=1, extra=False)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == message + "\n" and captured.out == ""


def test_help_prints_the_usage_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exc:
        common.parse_options(["steps=1", "--help"], {"steps": 8}, prog="bench", doc="\nUsage: bench [steps=N]\n")
    assert exc.value.code == 0 and capsys.readouterr().out == "Usage: bench [steps=N]\n"


@pytest.mark.parametrize("name", ["decoding", "distributed", "frozen_reader", "inference", "reader", "refresh"])
def test_every_moved_benchmark_answers_help_with_its_own_command(name, capsys):
    module = importlib.import_module(f"rag_e2e.benchmarks.{name}")
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0 and f"python -m rag_e2e.benchmarks.{name} " in capsys.readouterr().out


def test_device_label_names_the_gpu_else_the_cpu_threads(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert common.device_label() == f"cpu ({torch.get_num_threads()} threads)"
    assert common.device_label("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100")
    assert common.device_label() == common.device_label("cpu") == "NVIDIA H100"


def test_cpu_label_names_the_model_when_there_is_one(monkeypatch):
    monkeypatch.setattr(common, "cpu_model", lambda: "Some CPU @ 2GHz")
    assert common.cpu_label() == "cpu: Some CPU @ 2GHz"
    monkeypatch.setattr(common, "cpu_model", lambda: None)
    assert common.cpu_label() == "cpu"


def test_table_lines_up_header_and_rows():
    table = common.Table("<8", ">9.2f", ">6.1%", ">5")
    assert table.header("name", "rate/s", "share", "n") == "name       rate/s share    n"
    assert table.row("fast", 12.345, 0.25, 7) == "fast        12.35 25.0%    7"
    assert table.row("slow", "3.1 s", None, 2) == "slow        3.1 s          2"  # own format; a blank cell
    assert table.row("half", 1.0, None, None) == "half         1.00"  # no trailing blanks
    assert common.Table(">3", "<4", sep=" | ").row(1, "ab") == "  1 | ab  "


def test_write_result_writes_indented_json_that_round_trips(tmp_path, capsys):
    payload = {"device": "cpu (2 threads)", "rows": [{"ms": 1.5, "ok": True, "note": None}], "n": 3}
    path = common.write_result(tmp_path / "new" / "dir" / "r.json", payload)
    assert json.loads(path.read_text()) == payload
    assert path.read_text().startswith('{\n  "device"') and path.read_text().endswith("}\n")
    assert capsys.readouterr().out == f"wrote {path}\n"
    common.write_result(path, payload, indent=1, echo=False)
    assert path.read_text().startswith('{\n "device"') and capsys.readouterr().out == ""


def test_write_result_leaves_the_previous_file_whole_when_interrupted(tmp_path, monkeypatch):
    path = common.write_result(tmp_path / "r.json", {"old": 1}, echo=False)

    def killed(_):
        raise KeyboardInterrupt  # after the new contents are written beside it, before the rename

    monkeypatch.setattr(atomic, "fsync_file", killed)
    with pytest.raises(KeyboardInterrupt):
        common.write_result(path, {"new": 2})
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left
