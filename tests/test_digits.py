"""Multi-task digits: experts, task conflict, the cache (reuse, corruption), input checks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mooframe.params import is_json_serializable
from mooframe.pareto_set import FunctionalModel
from mooframe.problems import digits
from mooframe.problems.digits import TRANSFORMS, MultiTaskDigits, cache_path
from mooframe.registry import build_problem


@pytest.fixture(scope="module")
def all_tasks(digits_cache) -> tuple[MultiTaskDigits, np.ndarray, np.ndarray]:
    """The problem with every task, the pretrained model's accuracies, and accuracy[expert, task]."""
    problem = MultiTaskDigits(tasks=list(TRANSFORMS))
    pretrained = problem.evaluate(problem.pretrained).metrics["accuracy"]
    experts = np.stack(
        [problem.evaluate(FunctionalModel(problem.pretrained, s)).metrics["accuracy"] for s in problem.expert_states]
    )
    return problem, pretrained, experts


@pytest.mark.slow  # the real build (half a minute) and 25 evaluations
def test_experts_beat_the_pretrained_model_on_their_own_task(all_tasks):
    _, pretrained, experts = all_tasks
    # measured (seed 0): pretrained 0.73-0.76, experts 0.90-0.93 on their own task
    assert np.all(np.diag(experts) >= pretrained + 0.1)
    assert np.all(np.diag(experts) >= 0.85)


@pytest.mark.slow
def test_tasks_conflict(all_tasks):
    """An expert is far worse than the other tasks' experts on their tasks: merging them is a real trade-off."""
    _, pretrained, experts = all_tasks
    off_diagonal = ~np.eye(len(experts), dtype=bool)
    # measured: expert t on task s <= 0.69, expert s on s >= 0.90, and every expert forgets (< pretrained) elsewhere
    assert np.all((np.diag(experts)[None, :] - experts)[off_diagonal] >= 0.2)
    assert np.all((experts < pretrained[None, :])[off_diagonal])


def test_split_is_deterministic_and_disjoint():
    (train_x, train_y), (test_x, test_y) = digits.split_digits(0)
    assert len(train_y) + len(test_y) == 1797
    (again_x, _), _ = digits.split_digits(0)
    assert torch.equal(train_x, again_x)
    (other_x, _), _ = digits.split_digits(1)
    assert not torch.equal(train_x, other_x)
    flat_train = {tuple(x.flatten().tolist()) for x in train_x}
    assert sum(tuple(x.flatten().tolist()) in flat_train for x in test_x) < 0.05 * len(test_x)  # digits has duplicates


def test_a_second_build_reuses_the_cache(small_digits_cache, monkeypatch):
    def no_rebuild(seed, merge_fraction, progress):
        raise AssertionError("the cached build should have been reused")

    monkeypatch.setattr(digits, "build", no_rebuild)
    problem = MultiTaskDigits(tasks=["upright", "mirrored"])
    cached = load_file(str(cache_path(None, 0)))
    for state, task in zip(problem.expert_states, ["upright", "mirrored"], strict=True):
        for name, tensor in state.items():
            assert torch.equal(tensor, cached[f"expert.{task}.{name}"])


@pytest.mark.parametrize("damage", ["flip_a_byte", "truncate", "bad_manifest", "other_recipe", "missing_manifest"])
def test_a_corrupt_cache_is_detected_and_rebuilt(small_digits_cache, tmp_path, monkeypatch, damage):
    source = cache_path(small_digits_cache, 0)
    target = cache_path(tmp_path, 0)
    target.parent.mkdir(parents=True)
    shutil.copy(source, target)
    shutil.copy(source.with_suffix(".json"), target.with_suffix(".json"))
    manifest = target.with_suffix(".json")
    if damage == "flip_a_byte":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:1000])
    elif damage == "bad_manifest":
        manifest.write_text("{not json")
    elif damage == "other_recipe":
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format": "mooframe-digits/0"}))
    else:
        manifest.unlink()
    builds = []

    def rebuild(seed, merge_fraction, progress):  # stands in for the 40 s build: returns the same tensors it would
        builds.append(seed)
        return load_file(str(source))

    monkeypatch.setattr(digits, "build", rebuild)
    MultiTaskDigits(cache_dir=str(tmp_path))
    assert builds == [0]
    assert target.read_bytes() == source.read_bytes()
    MultiTaskDigits(cache_dir=str(tmp_path))  # the rewritten cache is valid: no second rebuild
    assert builds == [0]


def test_a_merge_fraction_trains_the_merge_on_digits_the_build_never_saw(small_digits_cache, tmp_path, monkeypatch):
    builds = []

    def build(seed, merge_fraction, progress):  # stands in for the build on the rest of the training split
        builds.append((seed, merge_fraction, progress))
        return load_file(str(cache_path(small_digits_cache, 0)))

    monkeypatch.setattr(digits, "build", build)
    kwargs = dict(cache_dir=str(tmp_path), merge_fraction=0.2, progress=False)
    problem = build_problem("digits", tasks=["upright", "rotated"], **kwargs)
    assert builds == [(0, 0.2, False)] and cache_path(tmp_path, 0, 0.2).name == "seed0-merge0.2.safetensors"
    assert cache_path(tmp_path, 0, 0.2).is_file() and not cache_path(tmp_path, 0).exists()
    train, _ = digits.split_digits(0)
    rest, held_out = digits.hold_out(train, 0.2)
    assert len(held_out[1]) == round(0.2 * len(train[1])) and len(rest[1]) + len(held_out[1]) == len(train[1])
    merge_images, merge_labels = problem.train_data[1].tensors
    assert torch.equal(merge_labels, held_out[1])
    assert torch.equal(merge_images, digits.task_dataset(held_out, "rotated").tensors[0])
    assert problem.spec()["kwargs"]["merge_fraction"] == 0.2
    MultiTaskDigits(tasks=["upright"], cache_dir=str(tmp_path), merge_fraction=0.2)
    assert len(builds) == 1  # its own cache, reused


@pytest.mark.parametrize(
    "fraction, message", [(-0.1, r"must be in \[0, 1\)"), (1.0, r"must be in \[0, 1\)"), (1e-4, "holds out no digit")]
)
def test_a_merge_fraction_that_holds_out_nothing_or_everything_is_rejected(fraction, message):
    with pytest.raises(ValueError, match=message):
        MultiTaskDigits(merge_fraction=fraction)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MOOFRAME_CACHE", str(tmp_path / "a"))
    assert cache_path(None, 3) == tmp_path / "a" / "digits" / "seed3.safetensors"
    monkeypatch.delenv("MOOFRAME_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_path(None, 0).parent == tmp_path / "xdg" / "mooframe" / "digits"


@pytest.mark.parametrize("tasks", [["upright", "sideways"], ["upright", "upright"], []])
def test_bad_tasks_are_rejected(tasks):
    with pytest.raises(ValueError, match="distinct names among upright, rotated"):
        MultiTaskDigits(tasks=tasks)


def test_built_by_name_with_json_kwargs(small_digits_cache):
    problem = build_problem("digits", tasks=["rotated", "inverted"], seed=0)
    assert problem.n_objectives == 2 and problem.objective_names == ["rotated", "inverted"]
    assert problem.upscale_presets["mlp"] and is_json_serializable(problem.spec()["kwargs"])
