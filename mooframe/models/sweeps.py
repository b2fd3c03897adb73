"""The paper's Task Arithmetic and TIES curves: lambda swept over the merge of all task vectors.

theta(lambda) = theta_0 + lambda sum_t tau_t (task arithmetic) or theta_0 + lambda disjoint_merge(trim(tau))
(TIES), for lambda in 0, 0.1, ..., 1: a one-parameter family, not a map from preferences. Each point is the
registered preference-weighted model (`task_arithmetic`, `ties`) with scaling lambda at the equal preference, where
it is the plain method, evaluated by `ParetoSetResult.front` like every other front.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mooframe.front import Front
from mooframe.problem import Problem
from mooframe.registry import build_model, build_solver
from mooframe.result import ParetoSetResult

#: The scaling coefficients of the authors' Task Arithmetic script, linspace(0, 1, 11).
PAPER_LAMBDAS = tuple(round(0.1 * i, 1) for i in range(11))
SWEPT_MODELS = ("task_arithmetic", "ties")


@dataclass
class Sweep:
    """The points of a lambda sweep: `front` row i is the merge at `lambdas[i]` (its `prefs` are all 1/T)."""

    model: str
    lambdas: list[float]
    front: Front

    def best(self) -> int:
        """Row of the lambda with the highest mean accuracy (the paper reports each baseline at its best lambda)."""
        return best_row(self.front.metrics["accuracy"])


def best_row(accuracy: np.ndarray) -> int:
    """Row of `accuracy` (one row per lambda, one column per task) with the highest mean over the tasks."""
    return int(np.argmax(np.asarray(accuracy).mean(axis=1)))


def lambda_sweep(
    problem: Problem, model: str = "task_arithmetic", lambdas: tuple[float, ...] = PAPER_LAMBDAS, **model_kwargs: Any
) -> Sweep:
    """The merges theta_0 + lambda * merge(tau) of `model` ("task_arithmetic" or "ties") at each lambda, evaluated."""
    if model not in SWEPT_MODELS:
        raise ValueError(f"lambda_sweep sweeps {', '.join(SWEPT_MODELS)}, not {model!r}")
    if "scaling" in model_kwargs:
        raise ValueError("lambda_sweep sets the scaling itself; pass the values as lambdas=[...]")
    equal = np.full((1, problem.n_objectives), 1.0 / problem.n_objectives)
    # built once (TIES trims once); both models read `scaling` when they merge, and neither merges anything
    # ahead of time with it (task arithmetic groups every parameter), so setting it moves along the family
    result = ParetoSetResult(problem, build_model(model, problem, **model_kwargs), build_solver("ls"))
    fronts = []
    for value in lambdas:
        result.model.scaling = float(value)
        fronts.append(result.front(equal))
    front = Front(
        prefs=np.concatenate([f.prefs for f in fronts]),
        objectives=np.concatenate([f.objectives for f in fronts]),
        objective_names=fronts[0].objective_names,
        metrics={name: np.concatenate([f.metrics[name] for f in fronts]) for name in fronts[0].metrics},
    )
    return Sweep(model, [float(v) for v in lambdas], front)
