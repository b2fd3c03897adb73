"""The command line: exit statuses by kind of failure, argument checks, KEY=VALUE options, solve and list."""

from __future__ import annotations

import json
import signal

import pytest

import mooframe.cli
from mooframe.checkpoint import Interrupted
from mooframe.cli import main, parse_options


def test_options_are_read_as_json_where_they_parse():
    assert parse_options(["a=1", "b=[1, 2]", "c=text", "d=true", "e=0.5", "f=a=b", "g="]) == {
        "a": 1,
        "b": [1, 2],
        "c": "text",
        "d": True,
        "e": 0.5,
        "f": "a=b",
        "g": "",
    }
    assert parse_options(None) == {}
    for bad in ("no-equals", "=1"):
        with pytest.raises(ValueError, match=f"option '{bad}' is not of the form key=value"):
            parse_options([bad])


@pytest.mark.parametrize(
    "error, status, message",
    [
        (ValueError("bad input"), 2, "mooframe list: error: bad input"),
        (KeyError("unknown key"), 2, "mooframe list: error: unknown key"),  # the key, not its repr
        (FileNotFoundError("no such run"), 2, "mooframe list: error: no such run"),
        (FloatingPointError("loss is NaN"), 1, "mooframe list: error: loss is NaN"),
        (OSError("disk full"), 1, "mooframe list: error: disk full"),
        (KeyboardInterrupt(), 130, "mooframe list: interrupted"),
        (Interrupted("interrupted by SIGTERM after step 3", signal.SIGTERM), 143, "after step 3"),
    ],
)
def test_exit_status_and_one_line_by_kind_of_failure(monkeypatch, capsys, error, status, message):
    def fail(args):
        raise error

    monkeypatch.setattr(mooframe.cli, "_cmd_list", fail)
    assert main(["list"]) == status
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_list_names_the_registered_components(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    solvers = next(line for line in lines if line.startswith("solvers: ")).removeprefix("solvers: ").split(", ")
    assert {"ls", "epo", "mgda", "tchebycheff"} <= set(solvers)
    assert any(line.startswith("problems: ") and "zdt1" in line for line in lines)
    assert any(line.startswith("models: ") and "pwe_moe" in line for line in lines)


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--steps", "-1", "must be an integer >= 0, got -1"),
        ("--steps", "ten", "'ten' is not an integer >= 0"),
        ("--lr", "0", "must be a finite number > 0, got 0"),
        ("--lr", "inf", "must be a finite number > 0, got inf"),
        ("--alpha", "-0.5", "must be a finite number > 0, got -0.5"),
        ("--device", "nonsense", "'nonsense' is not a device name; available: cpu"),
        ("--device", "cuda:99", "device 'cuda:99' is not available here"),
    ],
)
def test_bad_solve_arguments_exit_2_with_the_reason(tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as stop:
        main(["solve", "--problem", "zdt1", flag, value, "--out", str(tmp_path / "run")])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_bad_evaluate_numbers_exit_2(tmp_path, capsys):
    for flag, value, message in (("--n", "0", "must be an integer >= 1, got 0"), ("--ref", "nan", "a finite number")):
        with pytest.raises(SystemExit) as stop:
            main(["evaluate", str(tmp_path), flag, value])
        assert stop.value.code == 2 and message in capsys.readouterr().err


def test_solve_writes_the_run_with_its_options_and_refuses_unknown_names(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["solve", "--problem", "zdt1", "--steps", "3", "--seed", "4", "--quiet", "--out", str(out)]
    assert main([*args, "--model-option", "hidden=8", "--solver", "tchebycheff"]) == 0
    assert f"saved run to {out}" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == {"name": "hypernet", "kwargs": {"hidden": 8, "n_layers": 2}}
    assert config["solver"]["name"] == "tchebycheff" and config["settings"]["seed"] == 4
    assert config["settings"]["steps"] == 3
    assert main(["solve", "--problem", "zdt9", "--steps", "1", "--quiet", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mooframe solve: error: ") and "zdt9" in err and "zdt1" in err  # names the known ones
    assert not (tmp_path / "b").exists()
    assert main([*args[:-1], str(tmp_path / "c"), "--model-option", "hidden"]) == 2
    assert "option 'hidden' is not of the form key=value" in capsys.readouterr().err
