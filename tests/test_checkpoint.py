"""Checkpoint/resume (bit-identical continuation), Ctrl-C, and NaN/inf handling."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from toys import GramLS, RouterMerge

import mooframe.checkpoint
from mooframe.checkpoint import checkpoint_folders
from mooframe.problem import Problem
from mooframe.problems.merging import MergingProblem
from mooframe.result import ParetoSetResult
from mooframe.solve import solve
from mooframe.solvers.ls import LinearScalarization
from mooframe.solvers.tchebycheff import Tchebycheff

STEPS = 12


class _Disrupted(Problem):
    """`inner` whose losses go through `disrupt(losses)` at one step (counting calls from 0)."""

    def __init__(self, inner: MergingProblem, at_step: int, disrupt: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.inner, self.at_step, self.disrupt, self.calls = inner, at_step, disrupt, 0

    @property
    def n_objectives(self) -> int:
        return self.inner.n_objectives

    @property
    def objective_names(self) -> list[str]:
        return self.inner.objective_names

    def batches(self, rng):
        return self.inner.batches(rng)

    def _losses(self, solution, batch):
        losses = self.inner.losses(solution, batch)
        self.calls += 1
        return self.disrupt(losses) if self.calls == self.at_step + 1 else losses


def _crash(losses):
    raise RuntimeError("process killed")


def _ctrl_c(losses):
    os.kill(os.getpid(), signal.SIGINT)
    return losses


class _NanGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # NaN wherever a gradient flows (zeros stay zeros: other objectives are unaffected)
        return torch.where(grad == 0, grad, torch.full_like(grad, float("nan")))


class _CountingLS(LinearScalarization):
    """LS whose weights grow with the number of steps it has seen: its state must survive a checkpoint."""

    def reset(self, n_objectives: int) -> None:
        super().reset(n_objectives)
        self.calls = 0

    def _weights(self, losses, pref, gram):
        self.calls += 1
        return pref.to(losses) * (1 + 0.1 * self.calls)

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def _run(problem, model_problem=None, solver="ls", **kwargs):
    torch.manual_seed(0)
    model = RouterMerge(model_problem or problem)
    return solve(problem, model, solver, steps=STEPS, seed=2, progress=False, **kwargs)


def _assert_identical(a, b):
    """a and b end with the same parameters, and a trained: a run that changed nothing would resume trivially."""
    if isinstance(a.model, RouterMerge):
        torch.manual_seed(0)  # as `_run`: the initial RouterMerge
        initial = RouterMerge(a.model.merging_problem).trainable_state()
        assert any(not torch.equal(x, initial[k]) for k, x in a.model.trainable_state().items()), "nothing trained"
    for (name, x), y in zip(a.model.trainable_state().items(), b.model.trainable_state().values(), strict=True):
        assert torch.equal(x, y), f"{name} differs"


@pytest.mark.parametrize("disrupt, error", [(_crash, RuntimeError), (_ctrl_c, KeyboardInterrupt)])
def test_a_run_stopped_at_step_k_and_resumed_is_bit_identical(tiny_merging_problem, tmp_path, disrupt, error):
    uninterrupted = _run(tiny_merging_problem)
    stopped = _Disrupted(tiny_merging_problem, at_step=9, disrupt=disrupt)
    with pytest.raises(error):
        _run(stopped, tiny_merging_problem, checkpoint_dir=tmp_path, checkpoint_every=4)
    # a crash in step 9 leaves the checkpoint of step 8; Ctrl-C finishes step 9 and writes step 10
    expected = "step-00000008" if error is RuntimeError else "step-00000010"
    assert [p.name for p in checkpoint_folders(tmp_path)] == [expected]
    resumed = _run(tiny_merging_problem, resume=tmp_path)
    _assert_identical(resumed, uninterrupted)
    for key, values in uninterrupted.history.items():
        assert (resumed.history[key] == values).all(), key


def test_solver_state_is_restored_on_resume(tiny_merging_problem, tmp_path):
    uninterrupted = _run(tiny_merging_problem, solver=_CountingLS())
    with pytest.raises(RuntimeError):
        _run(
            _Disrupted(tiny_merging_problem, 7, _crash),
            tiny_merging_problem,
            solver=_CountingLS(),
            checkpoint_dir=tmp_path,
            checkpoint_every=5,
        )
    resumed = _run(tiny_merging_problem, solver=_CountingLS(), resume=tmp_path)
    assert resumed.solver.calls == STEPS
    _assert_identical(resumed, uninterrupted)


def test_nonfinite_loss_stops_naming_step_and_objective_and_keeps_the_last_good_checkpoint(
    tiny_merging_problem, tmp_path
):
    nan_in_b = _Disrupted(
        tiny_merging_problem, at_step=5, disrupt=lambda losses: losses * torch.tensor([1.0, float("nan")])
    )
    with pytest.raises(FloatingPointError, match=r"step 5: non-finite loss for objective\(s\) \['b'\]"):
        _run(nan_in_b, tiny_merging_problem, checkpoint_dir=tmp_path, checkpoint_every=2)
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["step-00000004"]
    resumed = _run(tiny_merging_problem, resume=tmp_path)  # the kept checkpoint is good: the run can go on
    assert all(torch.isfinite(p).all() for p in resumed.model.parameters())


def test_a_gram_solver_never_sees_a_nonfinite_gradient_and_the_objective_is_named(tiny_merging_problem):
    def nan_gradient_in_a(losses):
        return torch.stack([_NanGradient.apply(losses[0]), losses[1]])

    with pytest.raises(FloatingPointError, match=r"step 2: non-finite gradient of objective\(s\) \['a'\]"):
        _run(_Disrupted(tiny_merging_problem, 2, nan_gradient_in_a), tiny_merging_problem, solver=GramLS())


def test_skipped_steps_are_counted_and_leave_the_parameters_untouched(tiny_merging_problem):
    nan_grad = _Disrupted(tiny_merging_problem, at_step=3, disrupt=_NanGradient.apply)
    with pytest.raises(FloatingPointError, match=r"step 3: non-finite gradient in parameter\(s\) \['router"):
        _run(nan_grad, tiny_merging_problem)
    nan_grad.calls = 0
    skipped = _run(nan_grad, tiny_merging_problem, on_nonfinite="skip")
    assert skipped.settings["skipped_steps"] == 1
    assert torch.isnan(torch.as_tensor(skipped.history["weight"][3])).all()
    assert torch.isfinite(torch.as_tensor(skipped.history["weight"][4])).all()
    assert all(torch.isfinite(p).all() for p in skipped.model.parameters())
    # with plain SGD a skipped step equals a step with zero gradient: nothing else about the run changed
    nan_grad.calls = 0
    zero_grad = _Disrupted(tiny_merging_problem, at_step=3, disrupt=lambda losses: losses.detach() + 0 * losses)
    _assert_identical(
        _run(nan_grad, tiny_merging_problem, optimizer="sgd", on_nonfinite="skip"),
        _run(zero_grad, tiny_merging_problem, optimizer="sgd"),
    )


def test_a_checkpoint_write_that_fails_midway_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    calls = []

    def save_file_until_the_disk_is_full(tensors, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("No space left on device")
        save_file(tensors, path)

    monkeypatch.setattr(mooframe.checkpoint, "save_file", save_file_until_the_disk_is_full)
    options = {"model_kwargs": {"hidden": 8}, "progress": False, "seed": 4}
    with pytest.raises(OSError, match="No space left"):
        solve("zdt1", steps=8, checkpoint_dir=tmp_path, checkpoint_every=2, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints.json", "step-00000004"]  # no half-written one
    monkeypatch.undo()
    resumed = solve("zdt1", steps=8, resume=tmp_path, **options)
    _assert_identical(resumed, solve("zdt1", steps=8, **options))
    initial = solve("zdt1", steps=0, **options).model.parameters()
    assert any(not torch.equal(a, b) for a, b in zip(resumed.model.parameters(), initial, strict=True))


class _Crash(Exception):
    pass


def _ls_crashing_at_call(n: int) -> LinearScalarization:
    """Linear scalarization (spec "ls") that raises on its n-th weighting: a run stopped mid-way."""
    solver, calls = LinearScalarization(), []
    weights = solver.weights

    def counted(losses, pref, gram=None):
        calls.append(1)
        if len(calls) == n:
            raise _Crash
        return weights(losses, pref, gram)

    solver.weights = counted
    return solver


@pytest.mark.slow
def test_a_run_resumes_and_reloads_with_other_runtime_options(digits_cache, tmp_path):
    """Progress bars and the cache folder are not part of a run: a resume or a load may change them."""
    options = {"model": "pwe_moe", "steps": 2, "progress": False}
    tasks = ["upright", "rotated"]
    full = solve("digits", problem_kwargs={"tasks": tasks, "progress": True}, **options)
    kwargs = {"tasks": tasks, "seed": 0, "batch_size": 16, "merge_fraction": 0.0}
    assert full.problem.spec() == {"name": "digits", "kwargs": kwargs}
    with pytest.raises(_Crash):
        solve(
            "digits",
            solver=_ls_crashing_at_call(2),
            problem_kwargs={"tasks": tasks, "progress": True},
            checkpoint_dir=tmp_path / "a",
            checkpoint_every=1,
            **options,
        )
    elsewhere = {"tasks": tasks, "progress": False, "cache_dir": str(digits_cache)}  # the same cache, named explicitly
    resumed = solve("digits", problem_kwargs=elsewhere, resume=tmp_path / "a", **options)
    for key, tensor in full.model.trainable_state().items():
        torch.testing.assert_close(resumed.model.trainable_state()[key], tensor, rtol=0, atol=0)
    run = resumed.save(tmp_path / "run")
    loaded = ParetoSetResult.load(run, problem_options={"progress": False, "cache_dir": str(digits_cache)})
    assert loaded.problem.progress is False and loaded.problem.cache_dir == str(digits_cache)
    with pytest.raises(
        ValueError, match=r"options \['seed'\] cannot be re-supplied .* runtime options \(cache_dir, progress\)"
    ):
        ParetoSetResult.load(run, problem_options={"seed": 1})


@pytest.mark.slow
def test_a_run_with_four_preferences_a_step_resumes_bit_identical(tiny_merging_problem, tmp_path):
    """A stateful solver (Tchebycheff's running ideal point, updated under every preference) and Adam's moments
    survive the checkpoint; the resumed run draws the remaining preferences and batches exactly."""

    def run(problem, **kwargs):
        return _run(problem, tiny_merging_problem, Tchebycheff(ideal=None), **{"prefs_per_step": 4, **kwargs})

    uninterrupted = run(tiny_merging_problem)
    crashing = _Disrupted(tiny_merging_problem, at_step=9 * 4 + 2, disrupt=_crash)  # step 9, third preference
    with pytest.raises(RuntimeError, match="process killed"):
        run(crashing, checkpoint_dir=tmp_path, checkpoint_every=4)
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["step-00000008"]
    with pytest.raises(ValueError, match=r"prefs_per_step=4, this run has prefs_per_step=2"):
        run(tiny_merging_problem, resume=tmp_path, prefs_per_step=2)
    resumed = run(tiny_merging_problem, resume=tmp_path)
    _assert_identical(resumed, uninterrupted)
    for key, values in uninterrupted.history.items():
        assert values.shape == (STEPS * 4, 2) and (resumed.history[key] == values).all(), key
    assert resumed.solver.state_dict() == uninterrupted.solver.state_dict()


def test_a_checkpoint_written_before_k_existed_resumes_as_one_preference_a_step(tiny_merging_problem, tmp_path):
    with pytest.raises(RuntimeError):
        _run(
            _Disrupted(tiny_merging_problem, 5, _crash),
            tiny_merging_problem,
            checkpoint_dir=tmp_path,
            checkpoint_every=4,
        )
    state_file = checkpoint_folders(tmp_path)[-1] / "state.json"
    state = json.loads(state_file.read_text())
    for key in ("prefs_per_step", "grad_clip"):
        del state["settings"][key]  # as a checkpoint of an earlier mooframe holds them
    state_file.write_text(json.dumps(state))
    _assert_identical(_run(tiny_merging_problem, resume=tmp_path), _run(tiny_merging_problem))
    with pytest.raises(ValueError, match=r"prefs_per_step=1, this run has prefs_per_step=3"):
        _run(tiny_merging_problem, resume=tmp_path, prefs_per_step=3)


@pytest.mark.slow
def test_a_nonfinite_loss_under_one_of_k_preferences_stops_or_skips_the_whole_step(tiny_merging_problem):
    nan_in_b = _Disrupted(  # step 3, second of its four preferences
        tiny_merging_problem, at_step=3 * 4 + 1, disrupt=lambda losses: losses * torch.tensor([1.0, float("nan")])
    )
    with pytest.raises(FloatingPointError, match=r"step 3: non-finite loss for objective\(s\) \['b'\]"):
        _run(nan_in_b, tiny_merging_problem, GramLS(), prefs_per_step=4)
    nan_in_b.calls = 0
    skipped = _run(nan_in_b, tiny_merging_problem, GramLS(), prefs_per_step=4, on_nonfinite="skip")
    assert skipped.settings["skipped_steps"] == 1
    weights, losses = skipped.history["weight"], skipped.history["loss"]
    assert np.isnan(weights[12:16]).all() and np.isfinite(np.delete(weights, range(12, 16), axis=0)).all()
    assert np.isfinite(losses[12]).all() and np.isnan(losses[13, 1]) and np.isnan(losses[14:16]).all()
    # with plain SGD a skipped step equals a step with zero gradient under all four preferences
    nan_in_b.calls = 0
    _assert_identical(
        _run(nan_in_b, tiny_merging_problem, optimizer="sgd", prefs_per_step=4, on_nonfinite="skip"),
        _run(_ZeroGradientInStep(tiny_merging_problem, 3, 4), tiny_merging_problem, optimizer="sgd", prefs_per_step=4),
    )


class _ZeroGradientInStep(_Disrupted):
    """`inner` whose losses have zero gradient under every preference of step `at_step` (`per_step` a step)."""

    def __init__(self, inner: MergingProblem, at_step: int, per_step: int) -> None:
        super().__init__(inner, at_step, lambda losses: losses.detach() + 0 * losses)
        self.per_step = per_step

    def losses(self, solution, batch):
        losses = self.inner.losses(solution, batch)
        self.calls += 1
        return self.disrupt(losses) if (self.calls - 1) // self.per_step == self.at_step else losses


class _NoisyRouterMerge(RouterMerge):
    """RouterMerge with torch randomness in the forward (noise on the coefficients, as dropout would add)."""

    def forward(self, pref):
        solution = super().forward(pref)
        noise = 0.05 * torch.randn(len(solution.params))
        return type(solution)(
            solution.module, {k: v + n for (k, v), n in zip(solution.params.items(), noise, strict=True)}
        )


def test_resume_restores_the_torch_random_state_used_in_the_forward(tiny_merging_problem, tmp_path):
    def run(problem, **kwargs):
        torch.manual_seed(0)
        return solve(problem, _NoisyRouterMerge(tiny_merging_problem), "ls", steps=STEPS, seed=2, progress=False,
                     **kwargs)  # fmt: skip

    uninterrupted = run(tiny_merging_problem)
    different_noise = run(tiny_merging_problem)
    _assert_identical(uninterrupted, different_noise)  # the run seeds torch itself: reproducible ...
    with pytest.raises(RuntimeError):
        run(_Disrupted(tiny_merging_problem, 7, _crash), checkpoint_dir=tmp_path, checkpoint_every=3)
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["step-00000006"]
    torch.manual_seed(123)  # ... and a resumed run must not depend on the global state it starts from
    resumed = solve(tiny_merging_problem, _NoisyRouterMerge(tiny_merging_problem), "ls", steps=STEPS, seed=2,
                    progress=False, resume=tmp_path)  # fmt: skip
    _assert_identical(resumed, uninterrupted)
    assert (resumed.history["loss"] == uninterrupted.history["loss"]).all()


def test_skipped_steps_are_counted_across_a_resume(tiny_merging_problem, tmp_path):
    def nan_then_crash(at_crash):
        problem = _Disrupted(tiny_merging_problem, 2, _NanGradient.apply)
        inner_losses = problem.losses

        def losses(solution, batch):
            if problem.calls == at_crash:
                raise RuntimeError("process killed")
            return inner_losses(solution, batch)

        problem.losses = losses
        return problem

    uninterrupted = _run(nan_then_crash(at_crash=-1), tiny_merging_problem, on_nonfinite="skip")
    assert uninterrupted.settings["skipped_steps"] == 1
    with pytest.raises(RuntimeError):
        _run(nan_then_crash(at_crash=9), tiny_merging_problem, on_nonfinite="skip", checkpoint_dir=tmp_path,
             checkpoint_every=4)  # fmt: skip
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["step-00000008"]
    resumed = _run(tiny_merging_problem, on_nonfinite="skip", resume=tmp_path)
    assert resumed.settings["skipped_steps"] == 1  # the skip at step 2 happened before the checkpoint
    _assert_identical(resumed, uninterrupted)
    assert torch.isnan(torch.as_tensor(resumed.history["weight"][2])).all()
    assert torch.isfinite(torch.as_tensor(resumed.history["weight"][3:])).all()


def test_the_last_step_is_checkpointed_when_steps_is_not_a_multiple_of_the_interval(
    tiny_merging_problem, tmp_path, monkeypatch
):
    saved, save = [], mooframe.checkpoint.TrainingState.save
    monkeypatch.setattr(
        mooframe.checkpoint.TrainingState, "save", lambda self, d: saved.append(self.step) or save(self, d)
    )
    finished = _run(tiny_merging_problem, checkpoint_dir=tmp_path, checkpoint_every=5)
    assert saved == [5, 10, 12]  # every 5 steps, then the final partial interval of 2
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["step-00000012"]
    # resuming the finished run trains nothing more and gives the same model and history
    resumed = _run(tiny_merging_problem, resume=tmp_path)
    assert saved == [5, 10, 12]
    _assert_identical(resumed, finished)
    for key, values in finished.history.items():
        assert (resumed.history[key] == values).all(), key
    # a crash in the last partial interval resumes from step 10 to the same end
    other = tmp_path / "other"
    with pytest.raises(RuntimeError):
        _run(_Disrupted(tiny_merging_problem, 11, _crash), tiny_merging_problem, checkpoint_dir=other,
             checkpoint_every=5)  # fmt: skip
    assert [p.name for p in checkpoint_folders(other)] == ["step-00000010"]
    _assert_identical(_run(tiny_merging_problem, resume=other), finished)
