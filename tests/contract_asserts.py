"""Properties every registered piece must have, as asserts shared by the contract tests (torchjd's `_asserts.py`
idea): a test lists a piece and calls these; each assert compares values, not types alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mooframe.pareto_set import ParetoSetModel
from mooframe.problem import Problem
from mooframe.result import ParetoSetResult
from mooframe.solver import Solver


def assert_spec_round_trips(piece: Any, name: str, rebuild: Callable[..., Any]) -> Any:
    """`piece.spec()` names it `name`, survives JSON unchanged, and `rebuild(name, **kwargs)` gives a piece of the
    same class with the same spec. Returns the rebuilt piece."""
    spec = piece.spec()
    assert spec is not None and spec["name"] == name
    assert json.loads(json.dumps(spec)) == spec
    rebuilt = rebuild(spec["name"], **json.loads(json.dumps(spec["kwargs"])))
    assert type(rebuilt) is type(piece) and rebuilt.spec() == spec
    return rebuilt


def solution_outputs(solution: Any, inputs: torch.Tensor) -> torch.Tensor:
    """What a solution computes: the tensor itself (a decision vector), or a model's outputs on `inputs`."""
    with torch.no_grad():
        return solution.detach() if isinstance(solution, torch.Tensor) else solution(inputs)


def assert_materialize_equals_forward(
    model: ParetoSetModel, prefs: np.ndarray, inputs: torch.Tensor, depends_on_pref: bool
) -> None:
    """The standalone solution `materialize(r)` computes what the training-time `forward(r)` does, at every r;
    a model whose solution `depends_on_pref` gives different ones at the first and last preference."""
    model.eval()
    outputs = []
    for pref in prefs:
        forward = solution_outputs(model(torch.as_tensor(pref, dtype=torch.float32)), inputs)
        materialized = solution_outputs(model.materialize(pref), inputs)
        torch.testing.assert_close(materialized, forward, rtol=1e-5, atol=1e-5)
        outputs.append(forward)
    assert (outputs[0] - outputs[-1]).abs().max() > 1e-6 if depends_on_pref else torch.equal(outputs[0], outputs[-1])


def assert_run_reloads(result: ParetoSetResult, directory: Path, problem: Problem | None, inputs: torch.Tensor) -> None:
    """A saved run loads back with the same model and solver specs, trainable tensors, solver state, history
    and solutions (`problem`: None to rebuild a registered one from the run)."""
    loaded = ParetoSetResult.load(result.save(directory), problem=problem)
    assert loaded.model.spec() == result.model.spec() and loaded.solver.spec() == result.solver.spec()
    assert loaded.solver.state_dict() == result.solver.state_dict()
    saved = result.model.trainable_state()
    assert loaded.model.trainable_state().keys() == saved.keys()
    for key, tensor in loaded.model.trainable_state().items():
        torch.testing.assert_close(tensor, saved[key], rtol=0, atol=0)
    np.testing.assert_array_equal(loaded.history["weight"], result.history["weight"])
    pref = np.full(result.n_objectives, 1.0 / result.n_objectives)
    torch.testing.assert_close(
        solution_outputs(loaded.model_at(pref), inputs), solution_outputs(result.model_at(pref), inputs)
    )


def random_case(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generic solver inputs: T positive losses, a preference inside the simplex, and a full-rank Gram matrix of
    gradients with a conflicting pair and norms spread over two orders of magnitude."""
    generator = torch.Generator().manual_seed(seed)
    losses = 0.1 + torch.rand(n, generator=generator, dtype=torch.float64)
    pref = torch.distributions.Dirichlet(torch.ones(n, dtype=torch.float64)).sample()
    pref = (pref + 0.01) / (pref + 0.01).sum()
    jacobian = torch.randn(n, 2 * n + 1, generator=generator, dtype=torch.float64)
    jacobian[0] = -0.7 * jacobian[-1] + 0.3 * jacobian[0]
    jacobian *= torch.logspace(-1, 1, n, dtype=torch.float64)[:, None]
    return losses, pref, jacobian @ jacobian.T


def assert_weights_are_well_formed(solver: Solver, losses: torch.Tensor, pref: torch.Tensor, gram: torch.Tensor):
    """T finite weights, and no negative one where the solver promises w >= 0."""
    weights = solver.weights(losses, pref, gram)
    assert weights.shape == losses.shape and torch.isfinite(weights).all()
    if solver.nonnegative_weights:
        assert (weights >= 0).all() and weights.sum() > 0
    return weights


def assert_permutation_equivariant(
    make: Callable[[], Solver], losses: torch.Tensor, pref: torch.Tensor, gram: torch.Tensor, seed: int
) -> None:
    """w(P l, P r, P G P^T) = P w(l, r, G): relabelling the tasks relabels the weights (fresh solvers each)."""
    n = len(losses)
    perm = torch.roll(torch.arange(n), 1 + seed % (n - 1))  # a cyclic relabelling, never the identity
    perm[: n // 2] = perm[: n // 2].flip(0)  # and not cyclic only
    solver, permuted = make(), make()
    solver.reset(n)
    permuted.reset(n)
    weights = solver.weights(losses, pref, gram)
    moved = permuted.weights(losses[perm], pref[perm], gram[perm][:, perm])
    torch.testing.assert_close(moved.double(), weights.double()[perm], rtol=1e-6, atol=1e-8)


def assert_gram_scale_invariant(
    make: Callable[[], Solver], losses: torch.Tensor, pref: torch.Tensor, gram: torch.Tensor
) -> None:
    """Scaling every gradient by c > 0 (G G^T by c^2) leaves the weights unchanged."""
    reference = make()
    reference.reset(len(losses))
    weights = reference.weights(losses, pref, gram)
    for scale in (1e-4, 1e3):
        solver = make()
        solver.reset(len(losses))
        torch.testing.assert_close(
            solver.weights(losses, pref, scale * gram).double(), weights.double(), rtol=1e-6, atol=1e-9
        )
