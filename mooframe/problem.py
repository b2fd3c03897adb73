"""The Problem interface: T differentiable objectives, their data, and how a solution is scored."""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from mooframe.params import spec_of


@dataclass
class Evaluation:
    """How one solution scores: the objectives (minimized) and any per-task metrics (e.g. accuracy)."""

    objectives: np.ndarray
    metrics: dict[str, np.ndarray] = field(default_factory=dict)


class Problem(ABC):
    """T objectives to minimize, each a differentiable function of a solution.

    What a solution is depends on the problem: a decision vector for synthetic benchmarks, a model (any callable
    module, e.g. a `FunctionalModel`) for neural problems. A `ParetoSetModel` maps preferences to solutions.
    Subclasses store each constructor argument as an attribute of the same name (see `mooframe.params`).
    """

    #: the name the registry knows this class by (`mooframe list`); None for a class not registered.
    registry_name: ClassVar[str | None] = None
    #: constructor options naming paths or sources to read: never taken from a run file unconfirmed.
    path_options: ClassVar[tuple[str, ...]] = ()
    #: constructor options that change how it runs, not what it computes (progress bars, cache folders): not part
    #: of a run's spec, supplied again where a run is loaded (`problem_options=`) or resumed.
    runtime_options: ClassVar[tuple[str, ...]] = ()

    @property
    @abstractmethod
    def n_objectives(self) -> int:
        """T, the number of objectives."""

    @property
    def objective_names(self) -> list[str]:
        """One short name per objective, used in tables and plots."""
        return [f"f{t + 1}" for t in range(self.n_objectives)]

    def batches(self, rng: np.random.Generator) -> Iterator[Any]:
        """An endless stream of training batches, one item per step (by default no data: `None`).

        Under torch.distributed every rank gets the same `rng` and should yield its own share of each global batch
        (`mooframe.distributed.shard`, on the examples' indices before loading them, or on a loaded batch). A
        stream that yields whole global batches is still correct: each rank then computes the global losses.
        """
        return itertools.repeat(None)

    def losses(self, solution: Any, batch: Any = None) -> torch.Tensor:
        """The T training losses of `solution` on `batch`, shape (T,), differentiable (`_losses`, checked).

        RuntimeError when `_losses` returns anything but a float tensor whose last dimension is T. Its values are
        not checked here: a non-finite loss is a training event `solve` handles (`on_nonfinite`).
        """
        values = self._losses(solution, batch)
        if not isinstance(values, torch.Tensor) or values.shape[-1:] != (self.n_objectives,):
            shown = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise RuntimeError(f"{type(self).__name__}._losses returned {shown}, not ({self.n_objectives},) losses")
        if not values.is_floating_point():
            raise RuntimeError(f"{type(self).__name__}._losses returned {values.dtype} losses, not floating point")
        return values

    @abstractmethod
    def _losses(self, solution: Any, batch: Any) -> torch.Tensor:
        """What a problem implements: the T training losses of `solution` on `batch`, shape (T,), differentiable."""

    def evaluate(self, solution: Any) -> Evaluation:
        """Score a solution: objectives to minimize (shape (T,)) and optional per-task metrics (`_evaluate`,
        checked: RuntimeError unless the objectives are T finite numbers and each metric has T values)."""
        return self._checked(self._evaluate(solution))

    def _evaluate(self, solution: Any) -> Evaluation:
        """The evaluation of one solution; by default its losses on the first training batch."""
        with torch.no_grad():
            values = self.losses(solution, next(iter(self.batches(np.random.default_rng(0)))))
        return Evaluation(objectives=values.detach().double().cpu().numpy())

    def evaluate_many(self, solutions: Sequence[Any], progress: bool = False) -> list[Evaluation]:
        """`[self.evaluate(s) for s in solutions]`, each checked as `evaluate`'s; problems with data override
        `_evaluate_many` to read each example once for all the solutions (and show their progress, in examples per
        second, when `progress`)."""
        evaluations = self._evaluate_many(solutions, progress)
        if len(evaluations) != len(solutions):
            raise RuntimeError(
                f"{type(self).__name__}._evaluate_many returned {len(evaluations)} evaluations for "
                f"{len(solutions)} solutions"
            )
        return [self._checked(evaluation) for evaluation in evaluations]

    def _evaluate_many(self, solutions: Sequence[Any], progress: bool) -> list[Evaluation]:
        """One `Evaluation` per solution; by default `_evaluate` of each."""
        return [self._evaluate(solution) for solution in solutions]

    def _checked(self, evaluation: Evaluation) -> Evaluation:
        name, n = type(self).__name__, self.n_objectives
        objectives = np.asarray(evaluation.objectives, dtype=float)
        if objectives.shape != (n,) or not np.isfinite(objectives).all():
            raise RuntimeError(
                f"{name} evaluated a solution to objectives {objectives.tolist()}: expected {n} finite numbers"
            )
        for metric, values in evaluation.metrics.items():
            if np.shape(values) != (n,):
                raise RuntimeError(f"{name}'s metric {metric!r} has shape {np.shape(values)}, expected ({n},)")
        return evaluation

    def true_front(self, n_points: int = 1000) -> np.ndarray | None:
        """Points on the true Pareto front, shape (n, T), when it is known; otherwise None."""
        return None

    def to(self, device: torch.device | str) -> Problem:
        """Move the problem's tensors and frozen modules to `device` (no-op for problems without any)."""
        return self

    def spec(self) -> dict[str, Any] | None:
        """How to rebuild this problem by name (`{"name", "kwargs"}`), or None if its class is not registered."""
        return spec_of(self)
