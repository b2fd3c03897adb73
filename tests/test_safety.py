"""Attacks on every writer and reader: foreign files at output paths, kill -9 mid-write, concurrent writers,
tampered run files, path options in run files, SIGTERM and resume, and bad command lines (docs/robustness.md)."""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import mooframe.atomic
from mooframe.atomic import CHECKPOINTS, EXPORT, REPORT, RUN, ArtifactError, check_output, file_sha256, locked
from mooframe.checkpoint import STATE_FILE, TENSORS_FILE, checkpoint_folders, latest_checkpoint
from mooframe.cli import main
from mooframe.demo import run_demo
from mooframe.export import CARD_FILE, SAFETENSORS_FILE
from mooframe.problems.synthetic import ZDT1
from mooframe.report import compare_fronts, evaluation_preferences, write_report
from mooframe.reproduce.experiments import experiment_names
from mooframe.result import ParetoSetResult
from mooframe.solve import solve
from mooframe.solvers.ls import LinearScalarization

HIDDEN = {"hidden": 8}


def _result(steps: int = 3, seed: int = 0) -> ParetoSetResult:
    return solve("zdt1", steps=steps, seed=seed, progress=False, model_kwargs=HIDDEN)


@pytest.fixture(scope="module")
def results() -> tuple[ParetoSetResult, ParetoSetResult]:
    """Two different small zdt1 runs: what an old and a new artifact hold."""
    return _result(seed=0), _result(seed=1)


def _params(result: ParetoSetResult) -> dict[str, torch.Tensor]:
    return result.model.trainable_state()


def _same_params(a: ParetoSetResult, b: ParetoSetResult) -> bool:
    return all(torch.equal(x, y) for x, y in zip(_params(a).values(), _params(b).values(), strict=True))


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _foreign_folder(path: Path) -> dict[str, bytes]:
    """A user's folder at `path` (a thesis and a config.json of another tool); returns its contents."""
    (path / "chapters").mkdir(parents=True)
    (path / "chapters" / "one.tex").write_text("\\chapter{Results}")
    (path / "config.json").write_text(json.dumps({"format": "someone-else/1"}))
    return _snapshot(path)


# ---- 1. never delete or overwrite what mooframe did not write ------------------------------------------------


def _writers(results, tmp_path):
    """Each writer as a function of its output path."""
    first, _ = results
    front = first.front(n=3)
    return {
        "run": lambda path: first.save(path),
        "checkpoints": lambda path: solve(
            "zdt1", steps=2, progress=False, model_kwargs=HIDDEN, checkpoint_dir=path, checkpoint_every=1
        ),
        "report": lambda path: write_report(compare_fronts({"a": front}), {"a": front}, path),
        "export": lambda path: first.export(path, [0.5, 0.5], force=True, evaluate=False),
        "demo": lambda path: run_demo(path, steps=1, progress=False, methods={}),
    }


WRITERS = ("run", "checkpoints", "report", "export", "demo")


@pytest.mark.parametrize("writer", WRITERS)
def test_every_writer_refuses_a_foreign_folder_a_file_and_another_kind_and_leaves_them_as_they_were(
    results, tmp_path, writer
):
    write = _writers(results, tmp_path)[writer]
    folder = tmp_path / "thesis"
    contents = _foreign_folder(folder)
    with pytest.raises(
        ArtifactError,
        match=rf"{folder} is a folder mooframe did not write \(it holds chapters/, "
        r"config.json\); mooframe never replaces it",
    ) as error:
        write(folder)
    assert "\n" not in str(error.value)
    assert _snapshot(folder) == contents
    file = tmp_path / "notes.txt"
    file.write_text("my notes")
    with pytest.raises(ArtifactError, match=rf"{file} is a file, not a folder"):
        write(file)
    assert file.read_text() == "my notes"
    other = results[0].save(tmp_path / "a-run") if writer != "run" else _report(results, tmp_path / "a-report")
    before = _snapshot(other)
    with pytest.raises(ArtifactError, match=rf"{other} holds (a run|a report) of mooframe's, not a"):
        write(other)
    assert _snapshot(other) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder or lock left behind


def _report(results, path: Path) -> Path:
    front = results[0].front(n=3)
    write_report(compare_fronts({"a": front}), {"a": front}, path)
    return path


@pytest.mark.parametrize("writer", WRITERS[:-1])  # the demo's: tests/test_demo.py
def test_every_writer_writes_into_an_empty_folder_and_replaces_its_own_artifact(results, tmp_path, writer):
    write = _writers(results, tmp_path)[writer]
    (tmp_path / "out").mkdir()
    write(tmp_path / "out")
    first = _snapshot(tmp_path / "out")
    assert first
    write(tmp_path / "out")  # its own artifact of the same kind: replaced
    assert set(_snapshot(tmp_path / "out")) == set(first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_user_folder_named_like_a_checkpoint_is_neither_replaced_nor_removed(tmp_path):
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "step-00000002").mkdir()
    (directory / "step-00000002" / "data.csv").write_text("1,2,3")
    with pytest.raises(ArtifactError, match=r"ckpt is a folder mooframe did not write \(it holds step-00000002/\)"):
        solve("zdt1", steps=4, progress=False, model_kwargs=HIDDEN, checkpoint_dir=directory, checkpoint_every=2)
    assert (directory / "step-00000002" / "data.csv").read_text() == "1,2,3"


def test_export_force_never_replaces_the_run_being_read_nor_writes_inside_it(results, tmp_path):
    run = results[0].save(tmp_path / "run")
    loaded = ParetoSetResult.load(run)
    before = _snapshot(run)
    with pytest.raises(ArtifactError, match=rf"{run} would overwrite or sit inside {run}"):
        loaded.export(run, [0.5, 0.5], force=True, evaluate=False)
    with pytest.raises(ArtifactError, match="would overwrite or sit inside"):
        loaded.export(run / "best", [0.5, 0.5], force=True, evaluate=False)
    assert _snapshot(run) == before


@pytest.mark.parametrize("path", ["", ".", ".."])
def test_the_current_folder_and_the_empty_path_are_refused(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(ArtifactError, match="empty|current folder or one above it"):
        check_output(path, RUN)
    assert (tmp_path / "mine.txt").read_text() == "x"


def test_an_unwritable_parent_is_refused_before_work(tmp_path):
    locked_folder = tmp_path / "readonly"
    locked_folder.mkdir()
    locked_folder.chmod(0o500)
    try:
        if os.access(locked_folder, os.W_OK):
            pytest.skip("running as a user who may write anywhere (root)")
        with pytest.raises(ArtifactError, match=rf"no permission to write in {locked_folder}"):
            check_output(locked_folder / "run", RUN)
    finally:
        locked_folder.chmod(0o700)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactError, match=rf"{tmp_path / 'file'} is a file, not a folder"):
        check_output(tmp_path / "file" / "run", RUN)


def test_a_bad_out_is_refused_before_any_training(tmp_path, capsys, monkeypatch):
    trained = []
    monkeypatch.setattr(sys.modules["mooframe.solve"], "solve", lambda *a, **k: trained.append(1))
    (tmp_path / "thesis.pdf").write_bytes(b"%PDF")
    assert main(["solve", "--problem", "zdt1", "--quiet", "--out", str(tmp_path / "thesis.pdf")]) == 2
    assert "thesis.pdf is a file" in capsys.readouterr().err
    assert trained == [] and (tmp_path / "thesis.pdf").read_bytes() == b"%PDF"


# ---- 3. atomic replacement with recovery: kill -9 at random instants, concurrent writers ------------------------


def _fork(work, errors: Path | None = None) -> int:
    """Run `work()` in a forked child process; it exits 0, or 1 after writing its error to `errors`."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            torch.set_num_threads(1)  # the parent's OpenMP pool does not survive a fork: a team would never join
            work()
        except BaseException as error:  # noqa: BLE001 - reported to the parent through the exit status
            if errors is not None:
                errors.write_text(f"{type(error).__name__}: {error}")
            code = 1
        os._exit(code)
    return pid


def _wait(pid: int, timeout: float = 60.0) -> int:
    """The exit status of child `pid`; a child still running after `timeout` seconds is killed and fails the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"child process {pid} did not finish within {timeout} s")


def test_a_reader_cleaning_leftovers_leaves_a_running_writers_staging_file_alone(tmp_path, monkeypatch):
    index = tmp_path / "checkpoints.json"
    index.write_text("old")
    go_on = tmp_path / "go-on"
    real_fsync = os.fsync

    def fsync_when_told(descriptor: int) -> None:  # the writer stops with its staging file written, not renamed
        while not go_on.exists():
            time.sleep(0.01)
        real_fsync(descriptor)

    def write() -> None:
        monkeypatch.setattr(os, "fsync", fsync_when_told)
        mooframe.atomic.write_file_atomically(index, "new")

    pid = _fork(write, tmp_path / "error")
    try:
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob(".checkpoints.json.*.partial")) and time.monotonic() < deadline:
            time.sleep(0.01)
        staged = list(tmp_path.glob(".checkpoints.json.*.partial"))
        assert len(staged) == 1
        mooframe.atomic.clean_leftovers(tmp_path)  # e.g. `checkpoint_folders` polling beside the writer
        assert staged[0].exists()
    finally:
        go_on.touch()
        status = _wait(pid)
    assert status == 0, (tmp_path / "error").read_text()
    assert index.read_text() == "new"
    assert not list(tmp_path.glob(".checkpoints.json.*"))


def _kill_at_random(work, rng: random.Random, longest: float) -> None:
    pid = _fork(work)
    time.sleep(rng.uniform(0.0, longest))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _without_exchange() -> None:
    mooframe.atomic._RENAMEAT2 = None  # the two-rename swap of systems without renameat2


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_run_save_killed_at_random_instants_leaves_the_old_or_the_new_run(results, tmp_path, exchange):
    old, new = results
    path = old.save(tmp_path / "run")
    rng = random.Random(0)

    def save_forever() -> None:
        if not exchange:
            _without_exchange()
        for k in range(10**6):
            (old, new)[k % 2].save(path)

    seen = set()
    for _ in range(8):
        _kill_at_random(save_forever, rng, 0.15)
        loaded = ParetoSetResult.load(path)  # the reader recovers and cleans what the writer left
        matches = [_same_params(loaded, r) for r in (old, new)]
        assert any(matches), "the run at the path is neither the old nor the new one"
        seen.add(matches.index(True))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    old.save(path)  # and the next writer is not blocked
    assert _same_params(ParetoSetResult.load(path), old)


@pytest.mark.parametrize(
    "exchange, kill_after",
    [(True, "exchange"), (False, "first rename"), (False, "second rename")],
)
def test_a_save_killed_at_each_step_of_the_swap_is_recovered(results, tmp_path, exchange, kill_after):
    old, new = results
    path = old.save(tmp_path / "run")

    def save_and_die_midway() -> None:
        if not exchange:
            _without_exchange()
        real_rename, real_exchange, renames = os.rename, mooframe.atomic.exchange, []

        def rename(source, target):
            real_rename(source, target)
            renames.append(target)
            if kill_after == f"{('first', 'second')[len(renames) - 1]} rename":
                os.kill(os.getpid(), signal.SIGKILL)

        def exchange_then_die(first, second):
            done = real_exchange(first, second)
            if done:
                os.kill(os.getpid(), signal.SIGKILL)
            return done

        mooframe.atomic.os.rename = rename
        mooframe.atomic.exchange = exchange_then_die
        new.save(path)

    pid = _fork(save_and_die_midway)
    status = _wait(pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != "run")
    assert leftovers  # the kill left a backup or staging folder (and the lock file) behind
    expected = old if kill_after == "first rename" else new  # after the first rename only the backup holds a run
    assert _same_params(ParetoSetResult.load(path), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_export_killed_at_random_instants_leaves_a_whole_export(results, tmp_path):
    result = results[0]
    path = result.export(tmp_path / "export", [0.3, 0.7], force=True, evaluate=False)
    rng = random.Random(1)

    def export_forever() -> None:
        for k in range(10**6):
            result.export(path, [(0.3, 0.7), (0.6, 0.4)][k % 2], force=True, evaluate=False)

    for _ in range(6):
        _kill_at_random(export_forever, rng, 0.15)
        mooframe.atomic.recover_for_reading(path)
        card = json.loads((path / CARD_FILE).read_text())
        pref = [card["preference"]["f1"], card["preference"]["f2"]]
        assert pref in ([0.3, 0.7], [0.6, 0.4])
        solution = load_file(str(path / SAFETENSORS_FILE))["solution"]
        torch.testing.assert_close(solution, result.model_at(pref))  # the model matches its card
        assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_checkpoints_killed_at_random_instants_resume_to_the_uninterrupted_run(tmp_path):
    options = {"steps": 40, "seed": 3, "progress": False, "model_kwargs": HIDDEN}
    uninterrupted = solve("zdt1", **options)
    directory = tmp_path / "ckpt"
    rng = random.Random(2)
    for _ in range(3):
        _kill_at_random(lambda: solve("zdt1", checkpoint_dir=directory, checkpoint_every=1, **options), rng, 0.2)
        if not checkpoint_folders(directory):
            continue  # killed before the first checkpoint
        resumed = solve("zdt1", resume=directory, checkpoint_every=1, **options)
        assert _same_params(resumed, uninterrupted)
        assert sorted(p.name for p in directory.iterdir()) == ["checkpoints.json", "step-00000040"]
        shutil.rmtree(directory)


def _killed_at(module, name: str, when, before: bool = False) -> None:
    """In a forked child: SIGKILL the process when `module.name(*args)` is called with `when(*args)` true, before
    or after it does its work."""
    real = getattr(module, name)

    def call(*args):
        if before and when(*args):
            os.kill(os.getpid(), signal.SIGKILL)
        done = real(*args)
        if when(*args):
            os.kill(os.getpid(), signal.SIGKILL)
        return done

    setattr(module, name, call)


def _checkpointing_run(directory: Path, steps: int) -> ParetoSetResult:
    options = {"steps": steps, "seed": 2, "progress": False, "model_kwargs": HIDDEN}
    return solve("zdt1", checkpoint_dir=directory, checkpoint_every=1, **options)


def test_a_kill_while_an_old_checkpoint_is_removed_or_the_directory_marked_leaves_a_usable_directory(tmp_path):
    directory = tmp_path / "ckpt"

    def die_removing_the_first_checkpoint() -> None:
        _killed_at(os, "rename", lambda source, target: Path(source).name == "step-00000001")
        _checkpointing_run(directory, 4)

    _wait(_fork(die_removing_the_first_checkpoint))
    assert any(p.name.startswith(".step-00000001.") for p in directory.iterdir())  # renamed away, half removed
    assert checkpoint_folders(directory) == [directory / "step-00000002"]
    assert sorted(p.name for p in directory.iterdir()) == ["checkpoints.json", "step-00000002"]  # and cleaned
    resumed = solve("zdt1", steps=4, seed=2, progress=False, model_kwargs=HIDDEN, resume=directory)
    assert _same_params(resumed, solve("zdt1", steps=4, seed=2, progress=False, model_kwargs=HIDDEN))

    marked = tmp_path / "marked"

    def die_marking_the_directory() -> None:
        _killed_at(os, "replace", lambda source, target: Path(target).name == "checkpoints.json", before=True)
        _checkpointing_run(marked, 1)

    _wait(_fork(die_marking_the_directory))
    left = sorted(p.name for p in marked.iterdir())  # the marker's staging file and the lock its writer held
    assert len(left) == 2 and re.fullmatch(r"\.checkpoints\.json\.[0-9a-f]{8}\.partial", left[0])
    assert left[1] == ".checkpoints.json.lock"
    _checkpointing_run(marked, 1)  # not refused as a foreign folder
    assert sorted(p.name for p in marked.iterdir()) == ["checkpoints.json", "step-00000001"]


def test_a_second_concurrent_writer_gets_a_clear_error_and_the_first_wins(results, tmp_path):
    old, new = results
    path = old.save(tmp_path / "run")
    errors = tmp_path.parent / f"{tmp_path.name}-child.err"
    with locked(path):  # this process is writing the path
        status = _wait(_fork(lambda: new.save(path), errors))
    assert os.WEXITSTATUS(status) == 1
    assert errors.read_text() == (
        f"ArtifactError: {path} is being written by another process (it holds {tmp_path / '.run.lock'}); "
        "wait for it or choose another path"
    )
    errors.unlink()
    assert _same_params(ParetoSetResult.load(path), old)  # the first writer's artifact, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_two_processes_racing_on_one_path_leave_one_whole_run(results, tmp_path):
    old, new = results
    path = tmp_path / "run"
    log = tmp_path.parent / f"{tmp_path.name}-race.log"

    def save_many(result: ParetoSetResult) -> None:
        for _ in range(15):
            try:
                result.save(path)
                outcome = "saved"
            except ArtifactError as error:
                outcome = f"refused: {error}"
            with open(log, "a") as handle:
                handle.write(outcome.replace("\n", " ") + "\n")

    pids = [_fork(lambda r=r: save_many(r)) for r in (old, new)]  # each logs 15 outcomes
    statuses = [_wait(pid) for pid in pids]
    assert all(os.WEXITSTATUS(s) == 0 for s in statuses)
    outcomes = log.read_text().splitlines()
    log.unlink()
    assert len(outcomes) == 30 and "saved" in outcomes
    assert all(o == "saved" or "is being written by another process" in o for o in outcomes)
    loaded = ParetoSetResult.load(path)
    assert _same_params(loaded, old) or _same_params(loaded, new)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# ---- 4. run files are data -----------------------------------------------------------------------------------


@pytest.fixture
def run(results, tmp_path) -> Path:
    return results[0].save(tmp_path / "run")


def _edit_config(run: Path, edit) -> None:
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config))


def _rehash(run: Path) -> None:
    _edit_config(run, lambda c: c["files"].update({n: file_sha256(run / n) for n in c["files"]}))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.pop("objective_names"), r"key 'objective_names' is missing"),
        (lambda c: c.update(settings=[1]), r"key 'settings' must be an object, got \[1\]"),
        (lambda c: c.update(format="mooframe-run/9"), r"not a mooframe run this version reads"),
        (lambda c: c["problem"].update(name=7), r"key 'problem.name' must be a string, got 7"),
        (lambda c: c["model"].update(kwargs="hidden=8"), r"key 'model.kwargs' must be an object"),
        (
            lambda c: c["model"]["kwargs"].update(hidden="8"),
            r"key 'model.kwargs': model option hidden='8' for "
            r"hypernet must be int; it accepts hidden: int = 256",
        ),
        (lambda c: c["solver"]["kwargs"].update(rm="-rf"), r"key 'solver.kwargs': unknown solver option\(s\) \['rm'\]"),
        (lambda c: c["problem"]["kwargs"].update(n_var=True), r"problem option n_var=True for zdt1 must be int"),
        (lambda c: c["files"].update({"model.safetensors": "0" * 63}), r"key 'files.model.safetensors' must be"),
        (lambda c: c.update(objective_names=["f1", "f1"]), r"key 'objective_names' must be a list of distinct"),
        (lambda c: c["files"].pop("history.safetensors"), r"key 'files.history.safetensors' must be the file's SHA"),
        (lambda c: c.update(solver="ls"), r"key 'solver' must be an object or null, got \"ls\""),
    ],
)
def test_a_tampered_config_is_refused_naming_the_file_and_the_key(run, edit, message):
    _edit_config(run, edit)
    with pytest.raises(ValueError, match=message) as error:
        ParetoSetResult.load(run)
    assert str(run / "config.json") in str(error.value) and "\n" not in str(error.value)


def test_a_config_that_is_not_an_object_is_refused(run):
    (run / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"config.json must hold a JSON object, got list"):
        ParetoSetResult.load(run)


@pytest.mark.parametrize("name", ["model.safetensors", "history.safetensors"])
def test_truncated_or_edited_tensor_files_fail_their_hash_naming_the_file(run, name):
    data = (run / name).read_bytes()
    (run / name).write_bytes(data[: len(data) - 3])
    with pytest.raises(ValueError, match=rf"{run / name} does not match the SHA-256 recorded when it was saved"):
        ParetoSetResult.load(run)
    (run / name).write_bytes(data[:-4] + bytes([data[-4] ^ 1]) + data[-3:])  # one flipped bit
    with pytest.raises(ValueError, match="does not match the SHA-256"):
        ParetoSetResult.load(run)


@pytest.mark.parametrize(
    "name, edit, message",
    [
        ("model.safetensors", lambda t: t["net.0.weight"].fill_(float("inf")), r"'net.0.weight' holds non-finite"),
        ("model.safetensors", lambda t: t.update({"net.0.weight": t["net.0.weight"].int()}), r"dtype torch.int32"),
        ("model.safetensors", lambda t: t.update({"net.0.weight": torch.zeros(3)}), r"has shape \(3,\), model"),
        ("model.safetensors", lambda t: t.update({"extra": torch.zeros(1)}), r"unexpected \['extra'\]"),
        ("history.safetensors", lambda t: t.update(loss=t["loss"].float()), r"'loss' has dtype torch.float32"),
        (
            "history.safetensors",
            lambda t: t.update(loss=t["loss"][:, :1].contiguous()),
            r"expected float64 of shape \(rows, 2\)",
        ),
        ("history.safetensors", lambda t: t.update(loss=t["loss"][:1]), r"the same rows for loss, pref, weight"),
        ("history.safetensors", lambda t: t.update(code=torch.zeros(1)), r"unexpected tensors \['code'\]"),
    ],
)
def test_consistently_tampered_tensors_are_refused_naming_the_file(run, name, edit, message):
    tensors = load_file(str(run / name))
    edit(tensors)
    save_file(tensors, str(run / name))
    _rehash(run)  # a tamperer who also records the new hash
    with pytest.raises(ValueError, match=message) as error:
        ParetoSetResult.load(run)
    assert str(run / name) in str(error.value)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    solve("zdt1", steps=3, progress=False, model_kwargs=HIDDEN, checkpoint_dir=tmp_path / "ckpt", checkpoint_every=3)
    return tmp_path / "ckpt" / "step-00000003"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.update(step="3"), r"key 'step' must be an integer, got \"3\""),
        (lambda s: s.update(step=-1), r"keys 'step' and 'skipped_steps' must satisfy"),
        (lambda s: s.update(pref_rng=None), r"key 'pref_rng' must be an object, got null"),
        (lambda s: s.pop("files"), r"key 'files' is missing"),
        (lambda s: s.update(format="mooframe-run/2"), r"is not a mooframe checkpoint"),
    ],
)
def test_a_tampered_checkpoint_state_is_refused_naming_the_file_and_the_key(checkpoint, edit, message):
    state = json.loads((checkpoint / STATE_FILE).read_text())
    edit(state)
    (checkpoint / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(ValueError, match=message) as error:
        solve("zdt1", steps=3, progress=False, model_kwargs=HIDDEN, resume=checkpoint)
    assert str(checkpoint / STATE_FILE) in str(error.value)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda t: t.update({"rng/torch": torch.zeros(3)}),
            r"malformed \(TypeError: RNG state must be a torch.ByteTensor",
        ),
        (lambda t: t.update({"model/net.0.weight": t["model/net.0.weight"].int()}), r"has dtype torch.int32"),
    ],
)
def test_consistently_tampered_checkpoint_tensors_are_refused(checkpoint, edit, message):
    tensors = load_file(str(checkpoint / TENSORS_FILE))
    edit(tensors)
    save_file(tensors, str(checkpoint / TENSORS_FILE))
    state = json.loads((checkpoint / STATE_FILE).read_text())
    state["files"][TENSORS_FILE] = file_sha256(checkpoint / TENSORS_FILE)
    (checkpoint / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(ValueError, match=message) as error:
        solve("zdt1", steps=3, progress=False, model_kwargs=HIDDEN, resume=checkpoint)
    assert str(checkpoint) in str(error.value) and "\n" not in str(error.value)


def test_a_truncated_checkpoint_fails_its_hash(checkpoint):
    data = (checkpoint / TENSORS_FILE).read_bytes()
    (checkpoint / TENSORS_FILE).write_bytes(data[:100])
    with pytest.raises(ValueError, match=rf"{checkpoint / TENSORS_FILE} does not match the SHA-256"):
        solve("zdt1", steps=3, progress=False, model_kwargs=HIDDEN, resume=checkpoint)


def test_path_options_in_a_run_file_are_not_used_unconfirmed_and_nothing_is_built(run, tmp_path):
    elsewhere = tmp_path / "written-by-the-run-file"
    problem = {"name": "clip_image_classification", "kwargs": {"tasks": ["eurosat"], "model": str(elsewhere)}}
    _edit_config(run, lambda c: c.update(problem=problem))
    with pytest.raises(
        ValueError,
        match=rf"config.json key 'problem.kwargs' sets model='{elsewhere}', which "
        r"name\(s\) paths .* re-supply them .* or confirm .*--trust-run-paths",
    ):
        ParetoSetResult.load(run)
    assert not elsewhere.exists()
    with pytest.raises(
        ValueError,
        match=r"options \['tasks'\] cannot be re-supplied .* only its path options \(model, pretrained_weights, "
        r"experts, data\) and runtime options \(head_cache, decoded_cache\) can",
    ):
        ParetoSetResult.load(run, problem_options={"tasks": ["upright"]})
    assert not elsewhere.exists()


def test_the_reader_writes_nothing_outside_the_report_folder(run, tmp_path, capsys):
    before, contents = set(tmp_path.rglob("*")), _snapshot(run)
    assert main(["evaluate", str(run), "--quiet", "--n", "3", "--out", str(tmp_path / "report")]) == 0
    added = set(tmp_path.rglob("*")) - before
    assert added and all(p == tmp_path / "report" or tmp_path / "report" in p.parents for p in added)
    assert _snapshot(run) == contents  # the run read is unchanged
    assert json.loads((tmp_path / "report" / "report.json").read_text())["format"] == REPORT.format


# ---- 5. signals and resume -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_gives_byte_identical_parameters(tmp_path, capsys):
    settings = ["--problem", "zdt1", "--model-option", "hidden=8", "--steps", "600", "--seed", "5", "--quiet"]
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "mooframe.cli", "solve", *settings, "--checkpoint-every", "25", "--out", str(out)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoints = tmp_path / "run-checkpoints"
    deadline = time.monotonic() + 120
    while not checkpoint_folders(checkpoints) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=60)[1]
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and stderr.strip().startswith("mooframe solve: interrupted by SIGTERM after step")
    stopped_at = int(latest_checkpoint(checkpoints).name.removeprefix("step-"))
    assert 25 <= stopped_at < 600 and not out.exists()
    assert main(["solve", *settings, "--checkpoint-every", "25", "--out", str(out), "--resume", str(checkpoints)]) == 0
    assert main(["solve", *settings, "--out", str(tmp_path / "reference")]) == 0
    reference = (tmp_path / "reference" / "model.safetensors").read_bytes()
    assert (out / "model.safetensors").read_bytes() == reference


class _Stop(Exception):
    """Raised by `_stopping_ls` in the middle of a run: a crash."""


def _stopping_ls(after: int) -> LinearScalarization:
    """Linear scalarization (spec "ls", so a run by name can resume its checkpoints) that crashes at step `after`."""
    solver, calls = LinearScalarization(), []
    weights = solver.weights

    def counted(losses, pref, gram=None):
        calls.append(1)
        if len(calls) > after:
            raise _Stop
        return weights(losses, pref, gram)

    solver.weights = counted
    return solver


def test_resume_from_a_checkpoint_folder_writes_beside_it_and_a_resume_of_the_parent_finds_them(tmp_path):
    options = {"steps": 12, "seed": 1, "progress": False, "model_kwargs": HIDDEN, "checkpoint_every": 4}
    uninterrupted = solve("zdt1", **options)
    directory = tmp_path / "ckpt"
    with pytest.raises(_Stop):
        solve("zdt1", solver=_stopping_ls(4), checkpoint_dir=directory, **options)
    folder = directory / "step-00000004"
    assert checkpoint_folders(directory) == [folder]
    with pytest.raises(_Stop):  # resumed from the folder itself, crashing again 4 steps later
        solve("zdt1", solver=_stopping_ls(4), resume=folder, **options)
    assert checkpoint_folders(directory) == [directory / "step-00000008"]  # beside the one resumed from
    assert not list(directory.glob("*/step-*"))  # nothing inside a checkpoint folder
    resumed = solve("zdt1", resume=directory, **options)  # the parent: its newest checkpoint
    assert _same_params(resumed, uninterrupted)


def test_checkpoint_names_sort_by_step_at_any_step_count(checkpoint):
    directory = checkpoint.parent
    for name in ("step-99999999", "step-100000000", "step-00000010"):
        shutil.copytree(checkpoint, directory / name)
    assert [p.name for p in checkpoint_folders(directory)] == [
        "step-00000003",
        "step-00000010",
        "step-99999999",
        "step-100000000",
    ]
    assert latest_checkpoint(directory).name == "step-100000000"


# ---- 6. values checked where they are given; non-finite models never saved ---------------------------------------


class _HugeZDT1(ZDT1):
    """ZDT1 with losses (and gradients) 1e30 times larger: finite, but an update of lr 1e10 overflows float32."""

    def _losses(self, solution, batch):
        return super()._losses(solution, batch) * 1e30


def test_skip_never_saves_non_finite_parameters(tmp_path):
    with pytest.raises(FloatingPointError, match=r"step 0: the update made parameter\(s\) .* non-finite although"):
        solve(
            _HugeZDT1(),
            "hypernet",
            "ls",
            steps=3,
            lr=1e10,
            optimizer="sgd",
            progress=False,
            model_kwargs=HIDDEN,
            on_nonfinite="skip",
        )
    result = _result()
    with torch.no_grad():
        next(iter(result.model.trainable_parameters())).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="refusing to save a run with non-finite trainable parameter"):
        result.save(tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=r"non-finite parameters \['solution'\]; refusing to export"):
        result.export(tmp_path / "export", [0.5, 0.5], evaluate=False)
    assert sorted(tmp_path.iterdir()) == []


def test_the_default_number_of_preferences_grows_with_t_and_a_large_grid_needs_a_flag():
    for n_objectives in (2, 3, 8, 20):
        count = len(evaluation_preferences(n_objectives))
        assert count == {2: 11, 3: 66 + 1}.get(n_objectives, n_objectives + 1)  # + the equal one where missing
    with pytest.raises(
        ValueError,
        match=r"11 points per edge on 8 objectives evaluate up to 19449 preferences, "
        r"more than the budget of 1000; pass max_preferences=19449",
    ):
        evaluation_preferences(8, 11)
    assert len(evaluation_preferences(4, 12, max_preferences=400)) == math.comb(14, 3) + 1  # + the equal preference


# ---- the CLI: every user error is one line and exit status 2 ---------------------------------------------------


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    return _result(steps=1).save(tmp_path_factory.mktemp("cli") / "run")


def _bad_invocations(run: Path, tmp: Path) -> list[tuple[list[str], str]]:
    (tmp / "file.txt").write_text("mine")
    _foreign_folder(tmp / "foreign")
    corrupt = tmp / "corrupt"
    shutil.copytree(run, corrupt)
    (corrupt / "config.json").write_text("{not json")
    solve_ = ["solve", "--problem", "zdt1", "--quiet"]
    out = ["--out", str(tmp / "new")]
    return [
        ([*solve_, "--lr", "inf", *out], "argument --lr: must be a finite number > 0, got inf"),
        ([*solve_, "--lr=-1e-3", *out], "argument --lr: must be a finite number > 0, got -1e-3"),
        ([*solve_, "--alpha", "nan", *out], "argument --alpha: must be a finite number > 0, got nan"),
        ([*solve_, "--seed", "-1", *out], "argument --seed: must be an integer >= 0, got -1"),
        ([*solve_, "--steps", "-5", *out], "argument --steps: must be an integer >= 0, got -5"),
        ([*solve_, "--steps", "many", *out], "argument --steps: 'many' is not an integer >= 0"),
        ([*solve_, "--checkpoint-every", "-1", *out], "argument --checkpoint-every: must be an integer >= 0"),
        ([*solve_, "--prefs-per-step", "0", *out], "argument --prefs-per-step: must be an integer >= 1, got 0"),
        ([*solve_, "--grad-clip", "0", *out], "argument --grad-clip: must be a finite number > 0, got 0"),
        (
            [*solve_, "--device", "cuda:7", *out],
            "argument --device: device 'cuda:7' is not available here; available: cpu",
        ),
        ([*solve_, "--device", "gpu", *out], "argument --device: 'gpu' is not a device name; available: cpu"),
        ([*solve_, "--on-nonfinite", "ignore", *out], "argument --on-nonfinite: invalid choice: 'ignore'"),
        (["solve", "--problem", "nope", *out], "unknown problem 'nope'; known problems: "),
        ([*solve_, "--problem-option", "n_var", *out], "option 'n_var' is not of the form key=value"),
        (
            [*solve_, "--problem-option", "dim=3", *out],
            "unknown problem option(s) ['dim'] for zdt1; it accepts n_var: int",
        ),
        ([*solve_, "--problem-option", "n_var=abc", *out], "problem option n_var='abc' for zdt1 must be int"),
        ([*solve_, "--model-option", "hidden=0", *out], "hidden and n_layers must be >= 1"),
        (
            [*solve_, "--model-option", "width=3", *out],
            "unknown model option(s) ['width'] for hypernet; it accepts hidden: int = 256",
        ),
        (
            ["solve", "--problem", "zdt1", "--solver", "epo", "--solver-option", "eps=small", *out],
            "solver option eps='small' for epo must be float",
        ),
        ([*solve_, "--resume", "/nonexistent/ckpt", *out], "checkpoint directory /nonexistent/ckpt does not exist"),
        ([*solve_, "--out", ""], "the output path for a run is empty"),
        ([*solve_, "--out", "."], "is the current folder or one above it"),
        ([*solve_, "--out", str(tmp / "file.txt")], f"{tmp / 'file.txt'} is a file, not a folder"),
        ([*solve_, "--out", str(tmp / "foreign")], f"{tmp / 'foreign'} is a folder mooframe did not write"),
        ([*solve_, *out, "--checkpoint-dir", str(tmp / "foreign")], f"{tmp / 'foreign'} is a folder mooframe did not"),
        ([*solve_, *out, "--checkpoint-dir", str(tmp / "new" / "ckpt")], "would overwrite or sit inside"),
        (
            ["evaluate", str(tmp / "missing"), "--out", str(tmp / "r")],
            f"run directory {tmp / 'missing'} does not exist",
        ),
        (["evaluate", str(corrupt), "--out", str(tmp / "r")], f"corrupt JSON in {corrupt / 'config.json'}"),
        (["evaluate", str(run), "--out", str(run / "report")], f"would overwrite or sit inside {run}"),
        (["evaluate", str(run), "--out", str(tmp / "foreign")], "is a folder mooframe did not write"),
        (["evaluate", str(run), "--n", "0", "--out", str(tmp / "r")], "argument --n: must be an integer >= 1, got 0"),
        (["evaluate", str(run), "--n", "1", "--out", str(tmp / "r")], "the grid needs n >= 2 points per simplex edge"),
        (
            ["evaluate", str(run), "--n", "5000", "--out", str(tmp / "r")],
            "5000 points per edge on 2 objectives evaluate up to 5001 preferences, more than the budget of 1000",
        ),
        (["evaluate", str(run), "--max-preferences", "0", "--out", str(tmp / "r")], "argument --max-preferences"),
        (
            ["evaluate", str(run), "--problem-option", "n_var=3", "--out", str(tmp / "r")],
            "options ['n_var'] cannot be re-supplied for the run's problem zdt1",
        ),
        (
            ["evaluate", str(run), "--ref", "1", "inf", "--out", str(tmp / "r")],
            "argument --ref: must be a finite number",
        ),
        (["select", str(run), "best"], "rule 'best' must start with one of"),
        (["select", str(run), "knee", "--refine", "0"], "argument --refine: must be an integer >= 1, got 0"),
        (["select", str(run), "knee", "--device", "nope"], "argument --device: 'nope' is not a device name"),
        (["select", str(run), "min nope"], "unknown task 'nope' in 'nope'; tasks: f1, f2"),
        (["select", str(tmp / "file.txt"), "knee"], f"run directory {tmp / 'file.txt'} does not exist"),
        (["export", str(run), "--pref", "0.5,0.5", "--out", str(tmp / "foreign"), "--force"], "mooframe did not write"),
        (
            ["export", str(run), "--pref", "0.5,0.5", "--out", str(run), "--force"],
            f"would overwrite or sit inside {run}",
        ),
        (["export", str(run), "--pref", "0.5,0.6", "--out", str(tmp / "e")], "sums to 1.1, not 1"),
        (["export", str(run), "--pref", "a,b", "--out", str(tmp / "e")], "'a,b' is not a comma-separated list"),
        (["export", str(run), "--out", str(tmp / "e")], "one of the arguments --pref --select is required"),
        (["demo", "--out", str(tmp / "file.txt")], f"{tmp / 'file.txt'} is a file, not a folder"),
        (["demo", "--steps", "-1"], "argument --steps: must be an integer >= 0, got -1"),
        (["demo", "--workers", "0"], "argument --workers: must be an integer >= 1, got 0"),
        (["reproduce-everything"], "argument command: invalid choice: 'reproduce-everything'"),
        (["reproduce", experiment_names()[0], "--device", "tpu:9"], "argument --device: 'tpu:9' is not a device name"),
    ]


def test_every_bad_invocation_is_one_line_and_exit_status_2(cli_run, tmp_path, capsys):
    for arguments, message in _bad_invocations(cli_run, tmp_path):
        try:
            status = main(arguments)
        except SystemExit as exit_:  # argparse's own errors: the usage, then one line
            status = exit_.code
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert status == 2, (arguments, err)
        assert "Traceback" not in err
        usage = lines[:-1]
        assert not usage or (usage[0].startswith("usage: mooframe") and all(u.startswith(" ") for u in usage[1:])), err
        assert lines[-1].startswith("mooframe") and ": error: " in lines[-1], err
        assert message in lines[-1], (arguments, lines[-1])
    assert (tmp_path / "file.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "foreign").iterdir()) == ["chapters", "config.json"]
    assert not (tmp_path / "new").exists() and not (tmp_path / "r").exists() and not (tmp_path / "e").exists()


@pytest.mark.slow
def test_a_user_error_in_a_fresh_process_prints_no_traceback(cli_run, tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "mooframe.cli", "select", str(cli_run), "knee", "--problem-option", "x=1"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert process.returncode == 2
    assert process.stderr.strip().splitlines() == [
        "mooframe select: error: options ['x'] cannot be re-supplied for the run's problem zdt1: only its path and "
        "runtime options can (it has none)"
    ]


def test_force_replaces_only_an_export_and_the_checks_come_before_evaluation(cli_run, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(cli_run), "--pref", "0.3,0.7", "--out", str(out)]) == 0
    assert main(["export", str(cli_run), "--pref", "0.5,0.5", "--out", str(out)]) == 2
    assert "already exists; pass force=True (--force)" in capsys.readouterr().err
    assert main(["export", str(cli_run), "--pref", "0.5,0.5", "--out", str(out), "--force"]) == 0
    assert json.loads((out / CARD_FILE).read_text())["format"] == EXPORT.format
    assert np.allclose(list(json.loads((out / CARD_FILE).read_text())["preference"].values()), [0.5, 0.5])
    assert check_output(tmp_path / "run-checkpoints", CHECKPOINTS) == tmp_path / "run-checkpoints"
