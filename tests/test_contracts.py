"""Contract tests over everything registered (`mooframe.registry.registered()`), as scikit-learn's
`parametrize_with_checks`: a new problem, model or solver is tested by adding it to the registry.

Each piece is built with its defaults (on a tiny problem made here) and passed as an instance, never by name, so
that what a saved run records is what the class itself knows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from mooframe import solve
from mooframe.models.baselines import FixedMerge
from mooframe.models.merging import MergingModel
from mooframe.pareto_set import ParetoSetModel
from mooframe.problem import Evaluation, Problem
from mooframe.problems.merging import MergingProblem
from mooframe.problems.synthetic import ZDT1
from mooframe.registry import build_model, build_problem, build_solver, registered, resolve
from mooframe.result import ParetoSetResult
from mooframe.solver import Solver
from mooframe.solvers.ls import LinearScalarization
from tests.contract_asserts import (
    assert_gram_scale_invariant,
    assert_materialize_equals_forward,
    assert_permutation_equivariant,
    assert_run_reloads,
    assert_spec_round_trips,
    assert_weights_are_well_formed,
    random_case,
)

MODELS, SOLVERS, PROBLEMS = registered()["model"], registered()["solver"], registered()["problem"]
#: Gram-based solvers whose maths is invariant to scaling every gradient by c > 0: EPO's LPs take C over its max
#: entry; MGDA's min-norm point of the hull does not move; torchjd's UPGrad and DualProj project onto the dual cone,
#: which scaling leaves alone, and regularize the Gramian relative to its scale. (Scalarizations ignore the Gram.)
GRAM_SCALE_INVARIANT = {"epo", "mgda", "upgrad", "dualproj"}
INPUTS = torch.randn(5, 6, generator=torch.Generator().manual_seed(9))


def tiny_merging_problem(n_tasks: int = 2) -> MergingProblem:
    """T tasks on 6-d inputs: a two-layer backbone, experts = pretrained + noise, linear heads, 24 examples a task."""
    torch.manual_seed(0)
    pretrained = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8))
    experts = [
        {k: v.detach() + 0.3 * torch.randn_like(v) for k, v in pretrained.state_dict().items()} for _ in range(n_tasks)
    ]
    heads = [nn.Linear(8, 3) for _ in range(n_tasks)]
    data = [TensorDataset(torch.randn(24, 6), torch.randint(0, 3, (24,))) for _ in range(n_tasks)]
    return MergingProblem(pretrained, experts, heads, data, batch_size=8, upscale_presets={"mlp": [r"2"]})


def problem_for(model_class: type) -> Problem:
    return tiny_merging_problem() if issubclass(model_class, MergingModel) else ZDT1(n_var=4)


# ---- identity: every registered class knows its name -----------------------------------------------------------


@pytest.mark.parametrize(("kind", "name"), [(kind, name) for kind, names in registered().items() for name in names])
def test_every_registered_class_knows_its_registry_name(kind, name):
    cls = resolve(kind, name)
    assert vars(cls).get("registry_name") == name  # its own, not inherited from a registered parent


def test_a_subclass_inherits_no_name_and_its_run_is_refused_on_load_with_the_reason(tmp_path):
    class Tweaked(LinearScalarization):
        pass

    result = solve("zdt1", solver=Tweaked(), steps=2, progress=False, model_kwargs={"hidden": 8})
    assert Tweaked().spec() is None and LinearScalarization().spec() == {"name": "ls", "kwargs": {}}
    with pytest.raises(ValueError, match="used a solver that is not registered by name; it cannot be rebuilt"):
        ParetoSetResult.load(result.save(tmp_path / "run"))


def test_a_constructor_argument_not_stored_is_an_error_not_a_silent_default():
    from mooframe.solvers.epo import EPO

    class Forgetful(EPO):
        registry_name = "epo"

        def __init__(self, eps: float = 1e-4, backend: str = "simplex", lp: str = "mooframe") -> None:
            super().__init__(eps, backend, lp)
            del self.lp

    with pytest.raises(TypeError, match=r"Forgetful does not store its constructor argument 'lp' .* self\.lp"):
        Forgetful(lp="paper").spec()


# ---- models --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_model_spec_round_trips_and_rebuilds_the_same_model(name):
    cls = resolve("model", name)
    problem = problem_for(cls)
    torch.manual_seed(1)
    model = cls(problem)
    torch.manual_seed(1)
    rebuilt = assert_spec_round_trips(model, name, lambda n, **kwargs: build_model(n, problem, **kwargs))
    state = model.trainable_state()
    assert rebuilt.trainable_state().keys() == state.keys()
    for key, tensor in rebuilt.trainable_state().items():
        torch.testing.assert_close(tensor, state[key], rtol=0, atol=0)  # same seed, same spec: the same model


@pytest.mark.parametrize("name", MODELS)
def test_model_run_solved_with_an_instance_saves_loads_and_materializes_what_it_trains(name, tmp_path):
    cls = resolve("model", name)
    problem = problem_for(cls)
    model = cls(problem)
    result = solve(problem, model, "ls", steps=3, progress=False)
    if model.trainable_parameters():
        assert result.history["loss"].shape == (3, 2)
    assert_run_reloads(result, tmp_path / "run", problem if problem.spec() is None else None, INPUTS)
    prefs = np.array([[1.0, 0.0], [0.3, 0.7], [0.0, 1.0]])
    assert_materialize_equals_forward(result.model, prefs, INPUTS, depends_on_pref=not isinstance(model, FixedMerge))


# ---- solvers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SOLVERS)
def test_solver_spec_round_trips_and_a_run_solved_with_an_instance_reloads(name, tmp_path):
    solver = resolve("solver", name)()
    assert_spec_round_trips(solver, name, build_solver)
    result = solve("zdt1", model="hypernet", solver=solver, steps=3, progress=False, model_kwargs={"hidden": 8})
    assert np.isfinite(result.history["weight"]).all()
    assert_run_reloads(result, tmp_path / "run", None, INPUTS)


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("name", SOLVERS)
def test_solver_weights_are_finite_equivariant_to_relabelling_tasks_and_scale_free_where_the_maths_says(name, n):
    make = lambda: build_solver(name)  # noqa: E731 (a fresh solver per call: Tchebycheff may track an ideal point)
    for seed in range(3):
        losses, pref, gram = random_case(n, seed)
        solver = make()
        solver.reset(n)
        assert_weights_are_well_formed(solver, losses, pref, gram)
        assert_permutation_equivariant(make, losses, pref, gram, seed)
        if name in GRAM_SCALE_INVARIANT or not resolve("solver", name).needs_gram:
            assert_gram_scale_invariant(make, losses, pref, gram)


def test_the_scale_check_fails_for_a_solver_that_reads_the_gradients_scale():
    class NormWeighted(Solver):
        needs_gram = True

        def _weights(self, losses, pref, gram):
            return pref.double() * (1 + gram.diagonal())

    losses, pref, gram = random_case(3, 0)
    with pytest.raises(AssertionError):
        assert_gram_scale_invariant(NormWeighted, losses, pref, gram)


def test_the_relabelling_check_fails_for_a_solver_that_favours_the_first_task():
    class FirstFirst(Solver):
        def _weights(self, losses, pref, gram):
            return pref.double() * torch.arange(len(pref), 0, -1, dtype=torch.float64)

    losses, pref, gram = random_case(3, 0)
    with pytest.raises(AssertionError):
        assert_permutation_equivariant(FirstFirst, losses, pref, gram, seed=0)


@pytest.mark.parametrize("name", SOLVERS)
def test_solver_weights_refuses_inputs_it_is_not_defined_for(name):
    solver = build_solver(name)
    solver.reset(3)
    losses, pref, gram = random_case(3, 0)
    bad = [
        ((losses[:2], pref[:2], gram[:2, :2]), "reset for 3 objectives but got 2 losses"),
        ((losses.clone().fill_(float("nan")), pref, gram), "non-finite losses"),
        ((losses, torch.tensor([0.5, 0.6, -0.1]), gram), "negative entry"),
        ((losses, torch.tensor([0.2, 0.2, 0.2]), gram), "sums to 0.6"),
        ((losses[None], pref, gram), r"1-d float tensor, got \(1, 3\)"),
    ]
    if solver.needs_gram:
        bad += [
            ((losses, pref, None), "needs the Gram matrix"),
            ((losses, pref, gram[:2]), r"shape \(2, 3\) for 3 losses"),
            ((losses, pref, gram * float("inf")), "NaN or inf"),
        ]
    if solver.needs_nonnegative_losses:
        bad.append(((losses - 1.0, pref, gram), "needs non-negative losses"))
    for args, message in bad:
        with pytest.raises(ValueError, match=message):
            solver.weights(*args)


def test_weights_a_solver_returns_are_checked_against_its_promises():
    class Broken(Solver):
        nonnegative_weights = True

        def __init__(self, answer: list[float]) -> None:
            self.answer = answer

        def _weights(self, losses, pref, gram):
            return torch.tensor(self.answer)

    losses, pref = torch.ones(2), torch.tensor([0.5, 0.5])
    for answer, message in (
        ([1.0], r"shape \(1,\), not \(2,\)"),
        ([1.0, float("nan")], "non-finite weights"),
        ([1.5, -0.5], "negative weights"),
    ):
        with pytest.raises(RuntimeError, match=message):
            Broken(answer).weights(losses, pref)
    assert Broken([0.2, 0.8]).weights(losses, pref).tolist() == pytest.approx([0.2, 0.8])


# ---- problems ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", [n for n in PROBLEMS if not resolve("problem", n).path_options + resolve("problem", n).runtime_options]
)
def test_problem_built_from_its_defaults_round_trips_its_spec_and_scores_the_same(name):
    problem = resolve("problem", name)()
    rebuilt = assert_spec_round_trips(problem, name, build_problem)
    x = torch.rand(problem.bounds[0].shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(rebuilt.losses(x), problem.losses(x))
    np.testing.assert_array_equal(rebuilt.evaluate(x).objectives, problem.evaluate(x).objectives)


def test_problem_losses_and_evaluations_are_checked_where_they_are_returned():
    class Sloppy(Problem):
        def __init__(self, losses: torch.Tensor, evaluation: Evaluation) -> None:
            self.values, self.evaluation = losses, evaluation

        @property
        def n_objectives(self) -> int:
            return 2

        def _losses(self, solution, batch):
            return self.values

        def _evaluate(self, solution):
            return self.evaluation

    good = Evaluation(np.array([0.1, 0.2]), {"accuracy": np.array([0.9, 0.8])})
    assert Sloppy(torch.ones(2), good).evaluate(None) is good
    for losses, message in (
        (torch.ones(3), r"returned \(3,\), not \(2,\)"),
        (torch.ones(2, dtype=torch.long), "int64"),
    ):
        with pytest.raises(RuntimeError, match=message):
            Sloppy(losses, good).losses(None, None)
    for evaluation, message in (
        (Evaluation(np.array([0.1, np.nan])), r"objectives \[0.1, nan\]: expected 2 finite numbers"),
        (Evaluation(np.array([0.1])), "expected 2 finite numbers"),
        (Evaluation(np.array([0.1, 0.2]), {"accuracy": np.ones(3)}), r"'accuracy' has shape \(3,\)"),
    ):
        with pytest.raises(RuntimeError, match=message):
            Sloppy(torch.ones(2), evaluation).evaluate(None)
        with pytest.raises(RuntimeError, match=message):
            Sloppy(torch.ones(2), evaluation).evaluate_many([None])


def test_is_parametrized_over_everything_registered():
    assert set(MODELS) >= {"pwe_moe", "pareto_merging", "hypernet"} and set(SOLVERS) >= {"ls", "epo", "mgda"}
    assert all(isinstance(build_solver(name), Solver) for name in SOLVERS)
    assert all(issubclass(resolve("model", name), ParetoSetModel) for name in MODELS)
