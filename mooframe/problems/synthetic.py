"""Synthetic benchmarks with known Pareto fronts, written in torch so that they are differentiable.

Values equal pymoo's implementations (ZDT1-3, DTLZ2) on any input; the true fronts come from pymoo, or from
the closed form for VLMOP2, which pymoo does not ship.
"""

from __future__ import annotations

import math
from abc import abstractmethod

import numpy as np
import torch

from mooframe.indicators import non_dominated
from mooframe.preferences import uniform_grid
from mooframe.problem import Evaluation, Problem


class SyntheticProblem(Problem):
    """A problem whose solutions are decision vectors x in the box [xl, xu] (shape (n_var,))."""

    n_var: int

    @property
    @abstractmethod
    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper bounds of the decision vector, each of shape (n_var,)."""

    @abstractmethod
    def objectives(self, x: torch.Tensor) -> torch.Tensor:
        """Objective values for decision vectors x of shape (..., n_var); returns shape (..., T)."""

    def _losses(self, solution: torch.Tensor, batch: object) -> torch.Tensor:
        if solution.shape[-1] != self.n_var:
            raise ValueError(f"{type(self).__name__} expects {self.n_var} decision variables, got {solution.shape[-1]}")
        return self.objectives(solution)

    def _evaluate(self, solution: torch.Tensor) -> Evaluation:
        with torch.no_grad():
            return Evaluation(objectives=self.objectives(solution.double()).cpu().numpy())


class _ZDT(SyntheticProblem):
    pymoo_name: str

    def __init__(self, n_var: int = 30) -> None:
        if n_var < 2:
            raise ValueError(f"ZDT problems need n_var >= 2, got {n_var}")
        self.n_var = n_var

    @property
    def n_objectives(self) -> int:
        return 2

    @property
    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(self.n_var), torch.ones(self.n_var)

    def objectives(self, x: torch.Tensor) -> torch.Tensor:
        f1 = x[..., 0]
        g = 1.0 + 9.0 / (self.n_var - 1) * x[..., 1:].sum(-1)
        return torch.stack([f1, g * self._h(f1 / g, f1)], dim=-1)

    @staticmethod
    @abstractmethod
    def _h(ratio: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
        """The shape function: f2 = g * h(f1 / g)."""

    def true_front(self, n_points: int = 1000) -> np.ndarray:
        from pymoo.problems import get_problem

        # positional: pymoo names this argument n_pareto_points for ZDT1/2 but n_points for ZDT3
        front = get_problem(self.pymoo_name, n_var=self.n_var).pareto_front(n_points)
        # pymoo's ZDT3 region bounds are rounded: each region's first point is dominated by the previous region's last
        return front[non_dominated(front)]


class ZDT1(_ZDT):
    """ZDT1 (Zitzler, Deb, Thiele 2000): convex front f2 = 1 - sqrt(f1)."""

    registry_name = "zdt1"

    pymoo_name = "zdt1"

    @staticmethod
    def _h(ratio: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
        return 1.0 - torch.sqrt(ratio)


class ZDT2(_ZDT):
    """ZDT2: concave front f2 = 1 - f1^2 (linear scalarization reaches only its two ends)."""

    registry_name = "zdt2"

    pymoo_name = "zdt2"

    @staticmethod
    def _h(ratio: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
        return 1.0 - ratio**2


class ZDT3(_ZDT):
    """ZDT3: disconnected front f2 = 1 - sqrt(f1) - f1 sin(10 pi f1)."""

    registry_name = "zdt3"

    pymoo_name = "zdt3"

    @staticmethod
    def _h(ratio: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
        return 1.0 - torch.sqrt(ratio) - ratio * torch.sin(10.0 * math.pi * f1)


class DTLZ2(SyntheticProblem):
    """DTLZ2 (Deb et al. 2002): the front is the positive part of the unit sphere in M objectives."""

    registry_name = "dtlz2"

    def __init__(self, n_obj: int = 3, k: int = 10) -> None:
        if n_obj < 2 or k < 1:
            raise ValueError(f"DTLZ2 needs n_obj >= 2 and k >= 1, got n_obj={n_obj}, k={k}")
        self.n_obj, self.k = n_obj, k
        self.n_var = n_obj + k - 1

    @property
    def n_objectives(self) -> int:
        return self.n_obj

    @property
    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(self.n_var), torch.ones(self.n_var)

    def objectives(self, x: torch.Tensor) -> torch.Tensor:
        theta, tail = x[..., : self.n_obj - 1] * (math.pi / 2), x[..., self.n_obj - 1 :]
        radius = 1.0 + ((tail - 0.5) ** 2).sum(-1)
        values = []
        for m in range(self.n_obj):
            # f_m = r * prod_{i < M-1-m} cos(theta_i) * (sin(theta_{M-1-m}) if m > 0)
            value = radius * torch.prod(torch.cos(theta[..., : self.n_obj - 1 - m]), dim=-1)
            if m > 0:
                value = value * torch.sin(theta[..., self.n_obj - 1 - m])
            values.append(value)
        return torch.stack(values, dim=-1)

    def true_front(self, n_points: int = 1000) -> np.ndarray:
        """The Das-Dennis grid with at least `n_points` points projected on the sphere (as pymoo's pareto_front)."""
        # Not Riesz-energy directions: their optimisation is orders of magnitude slower than the grid for 1000 points.
        partitions = 1
        while math.comb(partitions + self.n_obj - 1, self.n_obj - 1) < n_points:
            partitions += 1
        directions = uniform_grid(self.n_obj, partitions + 1)
        return directions / np.linalg.norm(directions, axis=1, keepdims=True)


class VLMOP2(SyntheticProblem):
    """VLMOP2 / Fonseca-Fleming: f_{1,2} = 1 - exp(-||x -+ 1/sqrt(n)||^2), x in [-2, 2]^n; concave front."""

    registry_name = "vlmop2"

    def __init__(self, n_var: int = 2) -> None:
        if n_var < 1:
            raise ValueError(f"VLMOP2 needs n_var >= 1, got {n_var}")
        self.n_var = n_var

    @property
    def n_objectives(self) -> int:
        return 2

    @property
    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full((self.n_var,), -2.0), torch.full((self.n_var,), 2.0)

    def objectives(self, x: torch.Tensor) -> torch.Tensor:
        shift = 1.0 / math.sqrt(self.n_var)
        f1 = 1.0 - torch.exp(-((x - shift) ** 2).sum(-1))
        f2 = 1.0 - torch.exp(-((x + shift) ** 2).sum(-1))
        return torch.stack([f1, f2], dim=-1)

    def true_front(self, n_points: int = 1000) -> np.ndarray:
        # Pareto set: x_i = t for all i, t in [-1/sqrt(n), 1/sqrt(n)].
        shift = 1.0 / math.sqrt(self.n_var)
        t = np.linspace(-shift, shift, n_points)
        f1 = 1.0 - np.exp(-self.n_var * (t - shift) ** 2)
        f2 = 1.0 - np.exp(-self.n_var * (t + shift) ** 2)
        return np.stack([f1, f2], axis=1)
