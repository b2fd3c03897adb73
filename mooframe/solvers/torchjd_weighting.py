"""torchjd's Gramian-based weightings, exposed as mooframe solvers."""

from __future__ import annotations

import torch

from mooframe.solver import Solver


class TorchJDWeighting(Solver):
    """Weights from a torchjd `Weighting` of the Gram matrix (Quinton & Rey, "Jacobian Descent for
    Multi-Objective Optimization", 2024), with the preference r as torchjd's `pref_vector` when `use_preference`.

    Subclasses name the torchjd class in `weighting_name`; the computation is torchjd's, not re-written.
    """

    needs_gram = True
    nonnegative_weights = True
    weighting_name: str

    def __init__(self, use_preference: bool = True) -> None:
        self.use_preference = use_preference

    def _weights(self, losses: torch.Tensor, pref: torch.Tensor, gram: torch.Tensor | None) -> torch.Tensor:
        from torchjd import aggregation

        pref_vector = pref.detach().double().cpu() if self.use_preference else None
        return getattr(aggregation, self.weighting_name)(pref_vector=pref_vector)(gram)
