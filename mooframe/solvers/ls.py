"""Linear scalarization."""

from __future__ import annotations

import torch

from mooframe.solver import Solver


class LinearScalarization(Solver):
    """Linear scalarization: minimize sum_t r_t l_t, so the weights are the preference itself, w = r.

    Reaches only the convex part of a Pareto front.
    """

    registry_name = "ls"
    nonnegative_weights = True

    def _weights(self, losses: torch.Tensor, pref: torch.Tensor, gram: torch.Tensor | None) -> torch.Tensor:
        return pref.to(losses)
