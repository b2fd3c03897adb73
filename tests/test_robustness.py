"""Hostile input: each row of docs/robustness.md is one case here, with the one-line message it must get."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from toys import RouterMerge

from mooframe.atomic import file_sha256
from mooframe.checkpoint import STATE_FILE, TENSORS_FILE
from mooframe.problems.merging import MergingProblem
from mooframe.result import ParetoSetResult
from mooframe.solve import solve

MARKER = Path(tempfile.gettempdir()) / f"mooframe-pickle-ran-{os.getpid()}"


class _RunsCode:
    """Unpickling this calls Path.touch(MARKER): proof that code ran."""

    def __reduce__(self):
        return (Path.touch, (MARKER,))


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """A complete checkpoint folder of a 3-step zdt1 run (seed 0)."""
    solve(
        "zdt1",
        steps=3,
        progress=False,
        model_kwargs={"hidden": 8},
        checkpoint_dir=tmp_path / "ckpt",
        checkpoint_every=3,
    )
    return tmp_path / "ckpt" / "step-00000003"


def _resume(checkpoint: Path, **kwargs) -> None:
    settings = {"steps": 3, "model_kwargs": {"hidden": 8}, **kwargs}
    solve("zdt1", progress=False, resume=checkpoint, **settings)


def _rehash(folder: Path, json_file: str = STATE_FILE) -> None:
    """Record the current SHA-256 of the folder's tensor files, as a tamperer who edits the JSON too would."""
    path = folder / json_file
    state = json.loads(path.read_text())
    state["files"] = {name: file_sha256(folder / name) for name in state["files"]}
    path.write_text(json.dumps(state))


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_pickle_crafted_to_run_code_is_refused_as_a_checkpoint_and_does_not_run(checkpoint):
    MARKER.unlink(missing_ok=True)
    payload = pickle.dumps({"model": _RunsCode()})
    (checkpoint / TENSORS_FILE).write_bytes(payload)
    with pytest.raises(ValueError, match=r"tensors\.safetensors does not match the SHA-256 recorded") as error:
        _resume(checkpoint)
    _one_line(error)
    _rehash(checkpoint)
    with pytest.raises(ValueError, match=r"corrupt safetensors file .*tensors\.safetensors") as error:
        _resume(checkpoint)
    _one_line(error)
    evil = checkpoint.parent / "evil.pt"
    evil.write_bytes(payload)
    with pytest.raises(ValueError, match=r"evil\.pt is a file; pass a checkpoint directory"):
        _resume(evil)
    assert not MARKER.exists()
    pickle.loads(payload)  # the payload is live: unpickling it does run code
    assert MARKER.exists()
    MARKER.unlink()


def test_truncated_checkpoint_tensors(checkpoint):
    data = (checkpoint / TENSORS_FILE).read_bytes()
    (checkpoint / TENSORS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"step-00000003/tensors\.safetensors does not match the SHA-256") as error:
        _resume(checkpoint)
    _one_line(error)
    _rehash(checkpoint)
    with pytest.raises(ValueError, match=r"corrupt safetensors file .*step-00000003/tensors\.safetensors") as error:
        _resume(checkpoint)
    _one_line(error)


def test_corrupt_checkpoint_json(checkpoint):
    (checkpoint / STATE_FILE).write_text('{"format": "mooframe-checkpoint/1", "step"')
    with pytest.raises(ValueError, match=r"corrupt JSON in .*step-00000003/state\.json") as error:
        _resume(checkpoint)
    _one_line(error)


def test_checkpoint_of_a_different_run(checkpoint):
    with pytest.raises(ValueError, match=r"written by a run with seed=0, this run has seed=1") as error:
        _resume(checkpoint, seed=1)
    _one_line(error)
    with pytest.raises(ValueError, match=r"model=.*'hidden': 8.*this run has model=.*'hidden': 16"):
        _resume(checkpoint, model_kwargs={"hidden": 16})


def _edited_checkpoint_is_refused(checkpoint, edit, message: str) -> None:
    """`edit` the checkpoint's tensors in place; resuming must then raise one line matching `message`."""
    tensors = load_file(str(checkpoint / TENSORS_FILE))
    edit(tensors)
    save_file(tensors, str(checkpoint / TENSORS_FILE))
    _rehash(checkpoint)
    with pytest.raises(ValueError, match=message) as error:
        _resume(checkpoint)
    _one_line(error)


def test_checkpoint_with_nan_parameters(checkpoint):
    _edited_checkpoint_is_refused(
        checkpoint,
        lambda tensors: tensors["model/net.0.weight"].__setitem__((0, 0), float("nan")),
        r"step-00000003: non-finite values in trainable parameter 'net.0.weight'",
    )


def test_checkpoint_with_a_mismatched_optimizer_state(checkpoint):
    _edited_checkpoint_is_refused(
        checkpoint,
        lambda tensors: tensors.update({"optimizer/0/exp_avg": torch.zeros(3, 3)}),
        r"step-00000003: optimizer state 'optimizer/0/exp_avg' has shape \(3, 3\)",
    )


def test_checkpoint_missing_a_tensor(checkpoint):
    _edited_checkpoint_is_refused(
        checkpoint,
        lambda tensors: tensors.pop("rng/torch"),
        r"checkpoint .* is incomplete or malformed \(KeyError: 'rng/torch'\)",
    )


def test_missing_checkpoint_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint directory .*nowhere does not exist"):
        _resume(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no checkpoint \(step-NNNNNNNN/state.json\) in .*empty"):
        _resume(tmp_path / "empty")


def test_run_directory_holding_a_pickle(tmp_path):
    solve("zdt1", steps=1, progress=False, model_kwargs={"hidden": 8}).save(tmp_path / "run")
    MARKER.unlink(missing_ok=True)
    (tmp_path / "run" / "model.safetensors").write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(ValueError, match=r"model\.safetensors does not match the SHA-256"):
        ParetoSetResult.load(tmp_path / "run")
    _rehash(tmp_path / "run", "config.json")
    with pytest.raises(ValueError, match=r"corrupt safetensors file .*model\.safetensors"):
        ParetoSetResult.load(tmp_path / "run")
    assert not MARKER.exists()


def test_expert_with_mismatched_shapes(tiny_merging_problem):
    problem = tiny_merging_problem
    bad = {name: torch.zeros(3) if name == "0.bias" else p for name, p in problem.pretrained_state().items()}
    with pytest.raises(ValueError, match=r"expert for task 'b': parameter '0.bias' has shape \(3,\)") as error:
        MergingProblem(
            problem.pretrained,
            [problem.expert_states[0], bad],
            problem.heads,
            problem.train_data,
            task_names=["a", "b"],
        )
    _one_line(error)


def test_wrong_number_of_tasks(tiny_merging_problem):
    problem = tiny_merging_problem
    with pytest.raises(ValueError, match="got 2 experts but 3 heads; pass one per task"):
        MergingProblem(
            problem.pretrained, problem.expert_states, [*problem.heads, problem.heads[0]], problem.train_data
        )


@pytest.mark.parametrize(
    "pref, message",
    [
        ([0.2, 0.3, 0.5], "preference has 3 entries but the problem has 2 objectives"),
        ([0.5, 0.6], r"sums to 1.1, not 1"),
        ([1.5, -0.5], "has a negative entry"),
        ([float("nan"), 1.0], "contains NaN or inf"),
    ],
)
def test_preferences_off_the_simplex(tiny_merging_problem, pref, message):
    model = RouterMerge(tiny_merging_problem)
    with pytest.raises(ValueError, match=message) as error:
        model.materialize(pref)
    _one_line(error)
