"""Each subcommand's --help prints its own usage (not taken as a path), and bad numbers are one line naming the key."""

import pytest

from rag_e2e import cli


@pytest.mark.parametrize("command", [c for c in cli.COMMANDS if c != "train"])  # train: Hydra's own --help
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_commands_usage(command, flag, capsys):
    assert cli.main([command, flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: rag-e2e {command} ") and "error" not in out
    assert all(f"\n  {other} " not in out for other in cli.COMMANDS if other != command)  # only this command's


@pytest.mark.parametrize(("arg", "message"), [("port=abc", "`port` must be an integer, got 'abc'"),
                                              ("max_queue=1.5", "`max_queue` must be an integer, got '1.5'"),
                                              ("request_timeout_s=soon", "`request_timeout_s` must be a number")])
def test_serve_refuses_a_bad_number_in_one_line_naming_it(tmp_path, capsys, arg, message):
    assert cli.main(["serve", str(tmp_path), arg]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rag-e2e: error: ") and message in err[0]


def test_train_help_lists_every_experiment_and_sweep(capsys):
    from rag_e2e.compose import config_dir
    from rag_e2e.experiments_source import experiments_root
    from rag_e2e.launch import main as train

    assert train(["--help"]) == 0
    out = capsys.readouterr().out
    listed = {line.strip() for line in out.split("== Every experiment")[1].splitlines() if line.startswith("  ")}
    root = experiments_root()
    on_disk = {p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml")
               if p.parent.name != "wandb" and "sweeps" not in p.parts}  # W&B specs are not Hydra configs
    on_disk |= {p.stem for p in (config_dir() / "experiment").glob("*.yaml")}
    sweeps = {p.stem for folder in (root / "sweeps", config_dir() / "sweep") for p in folder.glob("*.yaml")}
    assert on_disk | sweeps <= listed and {"squad/rag_end2end", "tiny", "refresh_scope"} <= listed
    assert not any(name.startswith(("wandb/", "sweeps/")) for name in listed)
