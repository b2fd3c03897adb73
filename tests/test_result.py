"""ParetoSetResult by value: reading a format-1 run, load's messages, selection on a given grid with refinement,
and the export card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mooframe import ParetoSetResult, solve
from mooframe.preferences import uniform_grid


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A short ZDT1 run saved to disk, and the folder it is in."""
    folder = tmp_path_factory.mktemp("result") / "run"
    solve("zdt1", steps=30, seed=0, progress=False).save(folder)
    return folder


def test_a_format_1_run_loads_without_file_hashes(run, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    for name in ("model.safetensors", "history.safetensors"):
        (old / name).write_bytes((run / name).read_bytes())
    config = json.loads((run / "config.json").read_text())
    config = {key: value for key, value in config.items() if key not in ("files", "solver_state")}
    (old / "config.json").write_text(json.dumps({**config, "format": "mooframe-run/1"}))
    loaded, original = (
        ParetoSetResult.load(old).model.trainable_state(),
        ParetoSetResult.load(run).model.trainable_state(),
    )
    assert loaded.keys() == original.keys()
    assert all(torch.equal(loaded[name], original[name]) for name in loaded)


def test_load_says_what_to_pass_for_an_unregistered_problem_and_refuses_options_beside_an_instance(run, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in run.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "problem": None}))
    with pytest.raises(ValueError, match=r"problem instance that is not registered by name; pass it as "
                       r"ParetoSetResult\.load\(directory, problem=\.\.\.\)$"):  # fmt: skip
        ParetoSetResult.load(copy)
    problem = ParetoSetResult.load(run).problem
    with pytest.raises(ValueError, match=r"^problem_options re-supply options of the run's own problem; they cannot go "
                       r"with problem=$"):  # fmt: skip
        ParetoSetResult.load(run, problem=problem, problem_options={"n_var": 3})


def _chosen(front_prefs: np.ndarray, objectives: np.ndarray, bound: float) -> np.ndarray:
    """min f1 subject to f2 <= bound, by hand."""
    feasible = np.flatnonzero(objectives[:, 1] <= bound)
    return front_prefs[feasible[np.argmin(objectives[feasible, 0])]]


def test_select_uses_the_grid_it_is_given_and_refines_around_its_choice(run):
    result = ParetoSetResult.load(run)
    grid = uniform_grid(2, 3)
    front = result.front(grid)
    # three quarters of the way from the middle point's f2 to the larger end's: on a finer grid points between pass it
    middle, top = front.objectives[1, 1], front.objectives[:, 1].max()
    bound = float(middle + 0.75 * (top - middle))
    rule = f"min f1 subject to f2 <= {bound!r}"
    chosen = _chosen(grid, front.objectives, bound)
    np.testing.assert_allclose(result.select(rule, n=3).pref, chosen)
    assert not np.allclose(result.select(rule, n=11).pref, chosen)  # so the grid matters here
    refined = result.select(rule, n=3, refine=2)
    neighbours = [p for p in grid if np.isclose(np.abs(p - chosen).sum(), 1.0)]  # grid spacing 0.5
    candidates = np.vstack([grid, *[(p + chosen) / 2 for p in neighbours]])
    everything = result.front(candidates)
    np.testing.assert_allclose(refined.pref, _chosen(candidates, everything.objectives, bound))
    assert not np.allclose(refined.pref, chosen)  # the refinement moved the choice


def test_the_export_card_records_float_preferences_and_the_source_run(run, tmp_path):
    result = ParetoSetResult.load(run)
    folder = result.export(tmp_path / "export", [1, 0])
    card = json.loads((folder / "mooframe_card.json").read_text())
    assert card["preference"] == {"f1": 1.0, "f2": 0.0}
    assert all(isinstance(value, float) for value in card["preference"].values())
    assert card["source_run"] == str(run.resolve())
    assert card["method"]["name"] == result.model.spec()["name"] and card["solver"]["name"] == "ls"
