"""Smooth Tchebycheff scalarization."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mooframe.solvers.tchebycheff import Tchebycheff


class SmoothTchebycheff(Tchebycheff):
    """Smooth Tchebycheff (Lin et al., "Smooth Tchebycheff Scalarization for Multi-Objective Optimization",
    ICML 2024): s_mu(l) = mu log sum_t exp(r_t (l_t - z_t) / mu), a smooth upper bound of the Tchebycheff max.

    The weights are its gradient: w_t = r_t softmax(r (l - z) / mu)_t. As mu -> 0 it tends to Tchebycheff;
    larger mu gives smoother, better-conditioned updates.

    Args:
        mu: smoothing temperature (> 0).
        ideal: the ideal point z (default 0), or None to track the running minimum of the losses (see `Tchebycheff`).
    """

    registry_name = "smooth_tchebycheff"

    def __init__(self, mu: float = 0.1, ideal: float | Sequence[float] | None = 0.0) -> None:
        if not mu > 0:
            raise ValueError(f"mu must be > 0, got {mu}")
        super().__init__(ideal)
        self.mu = mu

    def scalarization_gradient(self, weighted_gaps: torch.Tensor, pref: torch.Tensor) -> torch.Tensor:
        return pref * torch.softmax(weighted_gaps / self.mu, dim=0)
