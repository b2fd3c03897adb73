"""MGDA: the min-norm point of the convex hull of the task gradients."""

from __future__ import annotations

import numpy as np
import torch

from mooframe.solver import Solver

_MAX_ITERATIONS = 1000


class MGDA(Solver):
    """Multiple-gradient descent (Désidéri 2012; Sener & Koltun, "Multi-Task Learning as Multi-Objective
    Optimization", NeurIPS 2018): w = argmin_{w in simplex} w^T (G G^T) w, the exact min-norm point.

    The QP is solved exactly from the Gram matrix by Wolfe's min-norm-point algorithm (an active-set method that
    ends in finitely many steps, robust to rank-deficient Gram matrices), not by early-stopped Frank-Wolfe.
    The direction sum_t w_t g_t decreases every loss (or is zero at a Pareto-stationary point). MGDA ignores the
    preference: it finds *a* Pareto-stationary point, not the one for r.

    Args:
        tol: relative optimality tolerance on the duality gap, scaled by the largest squared gradient norm.
    """

    registry_name = "mgda"

    needs_gram = True
    nonnegative_weights = True

    def __init__(self, tol: float = 1e-12) -> None:
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        self.tol = tol

    def _weights(self, losses: torch.Tensor, pref: torch.Tensor, gram: torch.Tensor | None) -> torch.Tensor:
        assert gram is not None  # needs_gram: the base class computed and checked it
        return torch.as_tensor(min_norm_weights(gram.numpy(), self.tol))


def min_norm_weights(gram: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """argmin_{w >= 0, sum w = 1} w^T Q w for a PSD matrix Q, by Wolfe's algorithm (Wolfe 1976) in Gram form.

    KKT conditions at the answer: (Q w)_t >= w^T Q w for every t, with equality where w_t > 0.
    When all gradients are zero every w is optimal and the uniform weights 1/T are returned.
    """
    n = len(gram)
    scale = float(np.max(np.diag(gram))) if n else 0.0
    if scale <= 0.0:
        return np.full(n, 1.0 / n)
    q = gram / scale
    floor = 1e-3 * tol  # weights below this are rounding noise: dropping them keeps the support affinely independent
    start = int(np.argmin(np.diag(q)))
    support, w = [start], np.zeros(n)
    w[start] = 1.0
    for _ in range(_MAX_ITERATIONS):
        qw = q @ w
        norm2 = float(w @ qw)
        entering = int(np.argmin(qw))
        if norm2 - qw[entering] <= tol or entering in support:
            break
        support.append(entering)
        while True:  # minor cycle: move towards the affine minimizer of the support, dropping points that leave it
            affine = _affine_min_norm(q, support)
            if np.all(affine > floor):
                w[:] = 0.0
                w[support] = affine
                break
            current = w[support]
            shrinking = affine < current
            theta = np.min(current[shrinking] / (current[shrinking] - affine[shrinking]), initial=1.0)
            w[support] = current + theta * (affine - current)
            support = [t for t in support if w[t] > floor]
            w[[t for t in range(n) if t not in support]] = 0.0
    return w / w.sum()


def _affine_min_norm(q: np.ndarray, support: list[int]) -> np.ndarray:
    """Coefficients (summing to 1) of the min-norm point of the affine hull of the support points."""
    k = len(support)
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = q[np.ix_(support, support)]
    kkt[:k, k] = kkt[k, :k] = 1.0
    rhs = np.zeros(k + 1)
    rhs[k] = 1.0
    try:
        solution = np.linalg.solve(kkt, rhs)[:k]
    except np.linalg.LinAlgError:  # support points affinely dependent up to rounding
        solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:k]
    return solution / solution.sum()
