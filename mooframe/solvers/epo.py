"""EPO: exact Pareto optimal search along a preference ray."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from mooframe.solver import Solver
from mooframe.solvers.gram import check_gram

BACKENDS = {"highs": "HIGHS", "osqp": "OSQP"}
_TINY = 1e-12
# Constraint slack, relative to C scaled to unit max entry: float32 gradients give C with relative rounding ~1e-7,
# which makes the exact constraints infeasible at Pareto-stationary points (anti-parallel gradients).
_SLACK = 1e-6


class EPO(Solver):
    """Exact Pareto Optimal search (Mahapatra & Rajan, "Multi-Task Learning with User Preferences: Gradient
    Descent with Controlled Ascent in Pareto Optimization", ICML 2020).

    Drives the losses onto the preference ray r_1 l_1 = ... = r_T l_T, then descends along it. With
    l_hat = r l / sum(r l), the non-uniformity is mu(r l) = sum_t l_hat_t log(T l_hat_t) (KL to uniform) and
    a_t = r_t (log(T l_hat_t) - mu). With C = G G^T, the weights alpha solve one of two LPs on the simplex:

    - balance (mu > eps): max alpha^T C a  s.t.  (C alpha)_j >= (C a)_j for j with (C a)_j <= 0,
      (C alpha)_j >= 0 for the j of largest r_j l_j;
    - descent (mu <= eps): max 1^T C alpha  s.t.  alpha^T C a >= min(max_j (C a)_j, 0),  C alpha >= 0.

    Each LP is written once per T with cvxpy Parameters (DPP), so it is compiled once and re-solved every step;
    C is scaled to unit max entry and the inequalities get a slack of 1e-6 (float32 rounding of C).
    A failed or infeasible LP falls back to the relaxed descent LP (without the alpha^T C a constraint), then to
    the linear-scalarization weights r; `stats()` counts both.

    Args:
        eps: non-uniformity below which EPO switches from balancing to descent.
        backend: LP solver behind cvxpy, "highs" (simplex, default) or "osqp" (ADMM): equally fast in
            training, but OSQP reports tight LPs infeasible and falls back (benchmarks/solvers.py).
    """

    needs_gram = True

    def __init__(self, eps: float = 1e-4, backend: str = "highs") -> None:
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown EPO backend {backend!r}; pass one of {', '.join(BACKENDS)}")
        self.eps, self.backend = eps, backend
        self._programs: _EPOPrograms | None = None
        self._counts = dict.fromkeys(("balance", "descent", "relaxed_fallbacks", "ls_fallbacks"), 0)

    def reset(self, n_objectives: int) -> None:
        super().reset(n_objectives)
        self._counts = dict.fromkeys(self._counts, 0)
        self._programs = None

    def weights(self, losses: torch.Tensor, pref: torch.Tensor, gram: torch.Tensor | None = None) -> torch.Tensor:
        n = losses.numel()
        c = check_gram(gram, n, "EPO")
        r = pref.detach().double().cpu().numpy()
        loss = losses.detach().double().cpu().numpy()
        if (loss < 0).any():
            raise ValueError(f"EPO needs non-negative losses (it balances r * l on a log scale); got {loss.tolist()}")
        scale = float(np.abs(c).max())
        if n == 1 or scale == 0:  # one objective (r = [1]), or zero gradients: any alpha gives the same update
            return torch.as_tensor(r)
        if self._programs is None or self._programs.n != n:
            self._programs = _EPOPrograms(n, BACKENDS[self.backend])
        mu, a = non_uniformity(r * loss), adjustment(r, loss)
        c = c / scale  # the LPs are invariant to scaling C; unit scale suits the LP tolerances
        mode = "balance" if mu > self.eps else "descent"
        self._counts[mode] += 1
        alpha = self._programs.balance(c, a, r * loss) if mode == "balance" else self._programs.descent(c, a)
        if alpha is None:
            self._counts["relaxed_fallbacks"] += 1
            alpha = self._programs.relaxed(c)
        if alpha is None:
            self._counts["ls_fallbacks"] += 1
            alpha = r
        return torch.as_tensor(alpha)

    def stats(self) -> dict[str, float]:
        """LPs solved in each mode, fallbacks taken, and solutions the backend flagged as inaccurate."""
        inaccurate = self._programs.inaccurate if self._programs is not None else 0
        return {**self._counts, "inaccurate": inaccurate}


def non_uniformity(rl: np.ndarray) -> float:
    """mu(r l) = KL(l_hat || uniform) = sum_t l_hat_t log(T l_hat_t), l_hat = r l / sum(r l); 0 on the r-ray."""
    total = rl.sum()
    if total <= 0:
        return 0.0
    l_hat = rl / total
    l_hat = l_hat[l_hat > _TINY]
    return float(np.sum(l_hat * np.log(l_hat * len(rl))))


def adjustment(r: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """a_t = r_t (log(T l_hat_t) - mu(r l)): the direction in loss space that restores uniformity of r l."""
    rl = r * losses
    l_hat = np.maximum(rl / max(rl.sum(), _TINY), _TINY)
    return r * (np.log(l_hat * len(rl)) - non_uniformity(rl))


class _EPOPrograms:
    """EPO's three LPs for T objectives, built once with cvxpy Parameters and re-solved with new values."""

    def __init__(self, n: int, solver: str) -> None:
        import cvxpy as cp

        self.n, self.solver = n, solver
        self.inaccurate = 0
        self.alpha = cp.Variable(n)
        self.c = cp.Parameter((n, n))
        self.ca = cp.Parameter(n)
        self.c_active = cp.Parameter((n, n))  # rows of C for the balance constraints, zero rows for unconstrained j
        self.rhs = cp.Parameter(n)
        self.ca_floor = cp.Parameter()  # min(max(Ca), 0) computed in numpy: cp.neg(cp.max(Ca)) is not DPP
        simplex = [self.alpha >= 0, cp.sum(self.alpha) == 1]
        descent = cp.Maximize(cp.sum(self.c @ self.alpha))
        no_ascent = self.c @ self.alpha >= -_SLACK
        balance = self.c_active @ self.alpha >= self.rhs - _SLACK
        self._balance = cp.Problem(cp.Maximize(self.ca @ self.alpha), [*simplex, balance])
        self._descent = cp.Problem(descent, [*simplex, self.ca @ self.alpha >= self.ca_floor - _SLACK, no_ascent])
        self._relaxed = cp.Problem(descent, [*simplex, no_ascent])

    def balance(self, c: np.ndarray, a: np.ndarray, rl: np.ndarray) -> np.ndarray | None:
        ca = c @ a
        active = ca <= 0  # losses that must not rise faster than the adjustment asks
        rhs = np.where(active, ca, 0.0)
        if not active.all():
            worst = rl == rl.max()  # the largest relative loss must not increase
            active, rhs = active | worst, np.where(worst, 0.0, rhs)
        else:
            rhs = np.zeros(self.n)
        self.ca.value, self.c_active.value, self.rhs.value = ca, c * active[:, None], rhs
        return self._solve(self._balance)

    def descent(self, c: np.ndarray, a: np.ndarray) -> np.ndarray | None:
        ca = c @ a
        self.c.value, self.ca.value, self.ca_floor.value = c, ca, min(float(ca.max()), 0.0)
        return self._solve(self._descent)

    def relaxed(self, c: np.ndarray) -> np.ndarray | None:
        self.c.value = c
        return self._solve(self._relaxed)

    def _solve(self, problem) -> np.ndarray | None:
        import cvxpy as cp

        try:
            with warnings.catch_warnings():  # an inaccurate solution is still a usable direction; counted instead
                warnings.simplefilter("ignore")
                problem.solve(solver=self.solver)
        except cp.SolverError:
            return None
        alpha = self.alpha.value
        if problem.status == cp.OPTIMAL_INACCURATE:
            self.inaccurate += 1
        elif problem.status != cp.OPTIMAL:
            return None
        if alpha is None or not np.isfinite(alpha).all():
            return None
        alpha = np.clip(alpha, 0.0, None)
        return alpha / alpha.sum() if alpha.sum() > 0 else None
