"""Quality indicators of an approximated Pareto front (objectives minimized): hypervolume, IGD, IGD+, GD.

Hypervolume is computed by moocore: exactly where that is cheap, otherwise by moocore's Monte-Carlo
approximation (Deng & Zhang 2019), whose standard error is reported with the value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import moocore
import numpy as np
from numpy.typing import ArrayLike

HypervolumeMethod = Literal["auto", "exact", "approximate"]

#: Fit of log(seconds) of moocore's exact hypervolume on n mutually non-dominated points in m >= 5 objectives:
#: log t = a + b m + (c m + d) log n, i.e. t ~ n^(m - 3.3). Measured by `benchmarks/hypervolume.py --calibrate`.
_EXACT_COST_FIT = (-6.35, -2.01, 1.01, -3.31)
#: In 4 objectives the exact algorithm is about quadratic: t ~ 6e-10 n^2 seconds (measured the same way).
_EXACT_COST_4D = 6e-10


@dataclass(frozen=True)
class HypervolumeResult:
    """A hypervolume value, how it was computed, and the standard error of the approximation (0 when exact)."""

    value: float
    method: Literal["exact", "approximate"]
    std_error: float = 0.0

    def __float__(self) -> float:
        return self.value


def as_points(points: ArrayLike, n_objectives: int | None = None, what: str = "points") -> np.ndarray:
    """`points` as a finite float array of shape (n, T); ValueError saying what is wrong otherwise."""
    array = np.asarray(points, dtype=float)
    if array.ndim == 1 and n_objectives is not None and array.size in (0, n_objectives):
        array = array.reshape(-1, n_objectives)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array of shape (n_points, n_objectives), got shape {array.shape}")
    if n_objectives is not None and array.shape[1] != n_objectives:
        raise ValueError(f"{what} have {array.shape[1]} objectives, expected {n_objectives}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contain NaN or inf; drop or repair those rows first")
    return array


def non_dominated(points: ArrayLike) -> np.ndarray:
    """Boolean mask of the points no other point dominates (minimization; duplicates all kept)."""
    array = as_points(points)
    if len(array) == 0:
        return np.zeros(0, dtype=bool)
    return moocore.is_nondominated(array, keep_weakly=True)


def estimated_exact_seconds(n_points: int, n_objectives: int) -> float:
    """Rough CPU seconds moocore needs for the exact hypervolume of `n_points` non-dominated points."""
    if n_objectives <= 3 or n_points <= 1:
        return 0.0
    if n_objectives == 4:
        return _EXACT_COST_4D * n_points**2
    a, b, c, d = _EXACT_COST_FIT
    return math.exp(a + b * n_objectives + (c * n_objectives + d) * math.log(n_points))


def hypervolume(
    points: ArrayLike,
    ref: ArrayLike,
    method: HypervolumeMethod = "auto",
    max_exact_seconds: float = 1.0,
    n_samples: int = 2**17,
    n_repeats: int = 8,
    seed: int = 0,
) -> HypervolumeResult:
    """Volume of objective space dominated by `points` and bounded by the reference point `ref`.

    HV(A) = Lebesgue measure of {y : a <= y <= ref for some a in A}. Points not strictly better than `ref`
    in every objective add nothing. `method="auto"` computes it exactly when `estimated_exact_seconds` of the
    non-dominated points is at most `max_exact_seconds`, else approximates it as the mean of `n_repeats`
    independent Monte-Carlo estimates of `n_samples` directions each (moocore.hv_approx, "DZ2019-MC"), and
    reports their standard error.
    """
    ref_array = np.asarray(ref, dtype=float)
    if ref_array.ndim != 1 or not np.isfinite(ref_array).all():
        raise ValueError(f"reference point must be a finite 1-D vector, got {ref_array.tolist()}")
    array = as_points(points, n_objectives=ref_array.size)
    if method not in ("auto", "exact", "approximate"):
        raise ValueError(f"unknown hypervolume method {method!r}; pass 'auto', 'exact' or 'approximate'")
    if n_samples < 1 or n_repeats < 2:
        raise ValueError(f"need n_samples >= 1 and n_repeats >= 2, got {n_samples} and {n_repeats}")
    array = array[(array < ref_array).all(axis=1)]
    if len(array) == 0:
        return HypervolumeResult(0.0, "exact")
    array = moocore.filter_dominated(array)
    if method == "auto":
        cheap = estimated_exact_seconds(len(array), ref_array.size) <= max_exact_seconds
        method = "exact" if cheap else "approximate"
    if method == "exact":
        return HypervolumeResult(float(moocore.hypervolume(array, ref=ref_array)), "exact")
    rng = np.random.default_rng(seed)
    estimates = np.array(
        [
            moocore.hv_approx(array, ref=ref_array, nsamples=n_samples, seed=rng, method="DZ2019-MC")
            for _ in range(n_repeats)
        ]
    )
    return HypervolumeResult(
        float(estimates.mean()), "approximate", float(estimates.std(ddof=1) / math.sqrt(n_repeats))
    )


def igd(points: ArrayLike, front: ArrayLike) -> float:
    """Inverted generational distance: mean over the true `front` of the distance to the nearest point."""
    array, reference = _pair(points, front)
    return float(moocore.igd(array, ref=reference))


def igd_plus(points: ArrayLike, front: ArrayLike) -> float:
    """IGD+ (Ishibuchi et al. 2015): IGD with d+(z, a) = ||max(a - z, 0)||, Pareto compliant."""
    array, reference = _pair(points, front)
    return float(moocore.igd_plus(array, ref=reference))


def gd(points: ArrayLike, front: ArrayLike) -> float:
    """Generational distance: mean over `points` of the distance to the nearest point of the true `front`."""
    from pymoo.indicators.gd import GD

    array, reference = _pair(points, front)
    return float(GD(reference).do(array))


def _pair(points: ArrayLike, front: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    reference = as_points(front, what="true front points")
    array = as_points(points, n_objectives=reference.shape[1])
    if len(array) == 0 or len(reference) == 0:
        raise ValueError("distance indicators need at least one point and one true front point")
    return array, reference
