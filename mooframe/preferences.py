"""Preference vectors on the probability simplex: validation, Dirichlet sampling, uniform grids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

PreferenceLike = Sequence[float] | np.ndarray | torch.Tensor

_SUM_TOLERANCE = 1e-6


def check_preference(pref: PreferenceLike, n_objectives: int) -> torch.Tensor:
    """Return `pref` as a float tensor of shape (T,) after checking it lies on the simplex.

    Raises ValueError naming the problem: wrong length, NaN/inf, a negative entry, or a sum other than 1.
    """
    values = torch.as_tensor(pref, dtype=torch.float64).detach().flatten()
    if values.numel() != n_objectives:
        raise ValueError(
            f"preference has {values.numel()} entries but the problem has {n_objectives} objectives: "
            f"pass {n_objectives} non-negative numbers summing to 1"
        )
    if not torch.isfinite(values).all():
        raise ValueError(f"preference {values.tolist()} contains NaN or inf")
    if (values < 0).any():
        raise ValueError(f"preference {values.tolist()} has a negative entry; entries must be >= 0")
    total = float(values.sum())
    if abs(total - 1.0) > _SUM_TOLERANCE:
        raise ValueError(f"preference {values.tolist()} sums to {total:.10g}, not 1")
    return values.to(torch.get_default_dtype())


def sample_preferences(
    n_objectives: int, rng: np.random.Generator, alpha: float = 1.0, n: int | None = None
) -> torch.Tensor:
    """Draw preferences from Dirichlet(alpha, ..., alpha): shape (T,), or (n, T) when `n` is given."""
    if alpha <= 0:
        raise ValueError(f"Dirichlet alpha must be > 0, got {alpha}")
    draws = rng.dirichlet(np.full(n_objectives, float(alpha)), size=n)
    return torch.as_tensor(draws, dtype=torch.get_default_dtype())


def uniform_grid(n_objectives: int, n: int) -> np.ndarray:
    """Das-Dennis grid on the simplex with `n` points per edge (pymoo's "uniform" reference directions).

    `n` points for two objectives, n(n+1)/2 for three (n=11 gives 11 and 66, the PWE-MoE evaluation grids).
    """
    if n < 2:
        raise ValueError(f"a grid needs at least 2 points per edge, got n={n}")
    if n_objectives == 1:
        return np.ones((1, 1))
    from pymoo.util.ref_dirs import get_reference_directions

    return get_reference_directions("uniform", n_objectives, n_partitions=n - 1)


def unit_preferences(n_objectives: int) -> np.ndarray:
    """The T unit vectors e_t: all weight on one objective."""
    return np.eye(n_objectives)


def equal_preference(n_objectives: int) -> np.ndarray:
    """The equal-weight preference (1/T, ..., 1/T)."""
    return np.full(n_objectives, 1.0 / n_objectives)
