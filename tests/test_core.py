"""The spine: preferences, registry, solve() and results on the synthetic problems."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

from mooframe import ParetoSetResult, solve
from mooframe.preferences import check_preference, sample_preferences, uniform_grid
from mooframe.registry import build_problem
from mooframe.solve import lr_factor
from mooframe.solvers.ls import LinearScalarization


@pytest.mark.parametrize(
    "pref, message",
    [([0.5, 0.5, 0.0], "2 objectives"), ([1.2, -0.2], "negative"), ([np.nan, 1.0], "NaN"), ([0.3, 0.3], "sums to")],
)
def test_bad_preferences_are_rejected_with_the_reason(pref, message):
    with pytest.raises(ValueError, match=message):
        check_preference(pref, 2)


def test_samples_and_grids_lie_on_the_simplex():
    samples = sample_preferences(3, np.random.default_rng(0), alpha=0.5, n=1000)
    assert torch.all(samples >= 0) and torch.allclose(samples.sum(1), torch.ones(1000, dtype=samples.dtype))
    assert uniform_grid(2, 11).shape == (11, 2)
    assert uniform_grid(3, 11).shape == (66, 3)
    np.testing.assert_allclose(uniform_grid(3, 11).sum(1), 1.0)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="known problems: .*zdt1"):
        build_problem("zdt99")
    with pytest.raises(ValueError, match="known solvers: .*ls"):
        solve("zdt1", solver="nope", steps=1, progress=False)


@pytest.mark.slow
def test_solve_is_deterministic_on_cpu():
    first = solve("zdt1", steps=20, seed=3, progress=False)
    second = solve("zdt1", steps=20, seed=3, progress=False)
    np.testing.assert_array_equal(first.history["loss"], second.history["loss"])
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)


class _GramLS(LinearScalarization):
    """LS routed through the per-task-gradient path: must give exactly the LS update."""

    needs_gram = True


@pytest.mark.slow
def test_gram_path_gives_the_same_update_as_the_summed_backward():
    plain = solve("zdt2", steps=15, seed=1, progress=False)
    gram = solve("zdt2", solver=_GramLS(), steps=15, seed=1, progress=False)
    for a, b in zip(plain.model.parameters(), gram.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gram_path_frees_each_step_graph_before_the_next_forward():
    """The Gram path retains the step's graph for T backward passes; the next forward must not run beside it."""
    zdt = type(build_problem("zdt2"))

    class Watched(zdt):
        previous_alive: list[bool] = []
        previous = None

        def _losses(self, solution, batch):
            self.previous_alive.append(self.previous is not None and self.previous() is not None)
            values = super()._losses(solution, batch)
            self.previous = weakref.ref(values)
            return values

    solve(Watched(), solver=_GramLS(), steps=3, progress=False)
    assert Watched.previous_alive == [False, False, False]


def test_save_load_gives_the_identical_front(tmp_path):
    result = solve("zdt1", steps=30, progress=False)
    result.save(tmp_path / "run")
    loaded = ParetoSetResult.load(tmp_path / "run")
    np.testing.assert_array_equal(result.front(n=7).objectives, loaded.front(n=7).objectives)
    # the trained front, not a freshly initialized model's (a load that rebuilt the model would match that one)
    assert np.abs(solve("zdt1", steps=0, progress=False).front(n=7).objectives - loaded.front(n=7).objectives).max() > 0
    np.testing.assert_array_equal(result.history["loss"], loaded.history["loss"])


def test_save_load_restores_the_solver_state(tmp_path):
    result = solve("zdt1", solver="tchebycheff", steps=3, progress=False, solver_kwargs={"ideal": None})
    state = result.solver.state_dict()
    assert state["running_min"] is not None and len(state["running_min"]) == 2  # a tracked ideal point
    loaded = ParetoSetResult.load(result.save(tmp_path / "run"))
    assert loaded.solver.state_dict() == state


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "history.safetensors"])
def test_missing_or_corrupt_run_files_are_named(tmp_path, name):
    solve("zdt1", steps=2, progress=False).save(tmp_path / "run")
    (tmp_path / "run" / name).write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=name):
        ParetoSetResult.load(tmp_path / "run")
    (tmp_path / "run" / name).unlink()
    with pytest.raises(FileNotFoundError, match=name):
        ParetoSetResult.load(tmp_path / "run")


@pytest.mark.slow
def test_zdt1_hypernet_ls_covers_the_true_front():
    from pymoo.indicators.hv import HV

    result = solve("zdt1", model="hypernet", solver="ls", steps=1000, lr=1e-3, progress=False)
    hv = HV(ref_point=np.array([1.1, 1.1]))
    ratio = hv(result.front(n=101).objectives) / hv(result.problem.true_front(1000))
    assert ratio >= 0.97


@pytest.mark.parametrize("kind", ["cosine", "constant"])
def test_warmup_rises_linearly_then_follows_the_schedule(kind):
    steps, warmup = 50, 10
    factors = [lr_factor(kind, steps, warmup, step) for step in range(steps + 1)]
    assert factors[:warmup] == pytest.approx([(i + 1) / warmup for i in range(warmup)])
    # after the warm-up: torch's own schedule over the remaining steps
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps - warmup, eta_min=0.1)
    expected = []
    for _ in range(steps - warmup + 1):
        expected.append(opt.param_groups[0]["lr"] if kind == "cosine" else 1.0)
        opt.step()
        reference.step()
    assert factors[warmup:] == pytest.approx(expected, abs=1e-12)


@pytest.mark.slow
def test_warmup_and_lr_default_to_the_models_and_are_checked(tiny_merging_problem):
    hypernet = solve("zdt1", "hypernet", steps=40, progress=False)
    assert hypernet.settings["warmup_steps"] == 0 and hypernet.settings["lr"] == 1e-3
    # PWE-MoE's 100 steps, capped at a tenth of a short run
    pwe_moe = solve(tiny_merging_problem, "pwe_moe", steps=40, progress=False, model_kwargs={"upscale": [".*"]})
    assert pwe_moe.settings["warmup_steps"] == 4 and pwe_moe.settings["lr"] == 1e-2
    assert solve("zdt1", "hypernet", steps=1, lr=0.5, progress=False).settings["lr"] == 0.5
    with pytest.raises(ValueError, match="lr must be > 0, got 0"):
        solve("zdt1", "hypernet", steps=40, lr=0, progress=False)
    with pytest.raises(ValueError, match="warmup_steps must be between 0 and steps = 40, got 41"):
        solve("zdt1", "hypernet", steps=40, warmup_steps=41, progress=False)
