"""DualProj, through torchjd."""

from __future__ import annotations

from mooframe.solvers.torchjd_weighting import TorchJDWeighting


class DualProj(TorchJDWeighting):
    """Dual projection (Quinton & Rey 2024, after Lopez-Paz & Ranzato's GEM): the r-weighted sum of gradients
    G^T r projected onto the dual cone {d : G d >= 0}, i.e. w = argmin_{v >= r} v^T (G G^T) v.

    A single projection (UPGrad projects each gradient): cheaper, and the update still conflicts with no task.
    Computed by `torchjd.aggregation.DualProjWeighting`.

    Args:
        use_preference: project G^T r (True) or the mean gradient (torchjd's default).
    """

    registry_name = "dualproj"

    weighting_name = "DualProjWeighting"
