"""UPGrad, through torchjd."""

from __future__ import annotations

from mooframe.solvers.torchjd_weighting import TorchJDWeighting


class UPGrad(TorchJDWeighting):
    """Unconflicting projection of gradients (Quinton & Rey 2024): w = sum_t r_t v_t, where G^T v_t is the
    projection of g_t onto the dual cone {d : G d >= 0}, i.e. v_t = argmin_{v >= e_t} v^T (G G^T) v.

    Every projected gradient decreases no loss less than zero, so the update never conflicts with a task;
    weighting the projections by r makes it preference-dependent. Computed by `torchjd.aggregation.UPGradWeighting`.

    Args:
        use_preference: weight the projections by r (True) or uniformly by 1/T (torchjd's default).
    """

    registry_name = "upgrad"

    weighting_name = "UPGradWeighting"
