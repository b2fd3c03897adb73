"""Input checks shared by the Gram-based solvers."""

from __future__ import annotations

import numpy as np
import torch


def check_gram(gram: torch.Tensor | np.ndarray | None, n_objectives: int, solver: str) -> np.ndarray:
    """The Gram matrix G G^T of the T task gradients as a float64 array, after checking its shape and values.

    Raises ValueError when it is missing, not T x T, or holds NaN/inf (a diverged loss or gradient upstream).
    """
    if gram is None:
        raise ValueError(f"{solver} needs the Gram matrix of the task gradients: pass gram=G @ G.T (solve() does)")
    values = gram.detach().double().cpu().numpy() if isinstance(gram, torch.Tensor) else np.asarray(gram, float)
    if values.shape != (n_objectives, n_objectives):
        raise ValueError(
            f"{solver} got a Gram matrix of shape {values.shape} for {n_objectives} losses; "
            f"pass the {n_objectives} x {n_objectives} matrix G @ G.T"
        )
    if not np.isfinite(values).all():
        raise ValueError(
            f"{solver} got a Gram matrix with NaN or inf entries: a task gradient is not finite "
            "(lower the learning rate or check the losses)"
        )
    return (values + values.T) / 2
