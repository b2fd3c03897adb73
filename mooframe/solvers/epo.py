"""EPO: exact Pareto optimal search along a preference ray."""

from __future__ import annotations

import numpy as np
import torch

from mooframe.solver import Solver
from mooframe.solvers.lp_backends import BACKENDS, LP, CvxpyLPs, HighsLPs, SimplexLPs

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

    Unlike the paper, the balance LP takes a scaled to unit max entry, and where a = 0 with mu > eps (r on the
    simplex's boundary, e.g. a vertex) EPO returns alpha = r: near the vertices the paper's a vanishes and its LP
    forbids the ascent on the unpreferred losses that the ray asks for (docs/solvers.md).

    All three LPs read max cost^T alpha over the simplex s.t. rows alpha >= lower (`balance_lp`, `descent_lp`,
    `relaxed_lp`), with T variables and at most T + 1 rows. The default backend solves them with `simplex_lp`, a
    dense simplex method written for these sizes; HiGHS solves them through highspy (one persistent model per LP,
    cost and rows replaced each step, warm-started from the last basis); OSQP through cvxpy, each LP compiled once
    (Parameters, DPP). C is scaled to unit max entry and the inequalities get a slack of 1e-6 (float32 rounding of C).
    A failed or infeasible LP falls back to the relaxed descent LP (without the alpha^T C a constraint), then to
    the linear-scalarization weights r; `stats()` counts both.

    With `lp="paper"` EPO solves the published LPs unmodified, as the PWE-MoE code calls them (Pareto
    HyperNetworks' `EPOSolver` around EPOSearch's `ExactParetoLP`): the balance LP with the unscaled adjustment a,
    its rows (C alpha)_j >= (C a)_j for the j with (C a)_j <= 0 and >= 0 for the largest r_j l_j; no slack, no
    vertex rule and no relaxed LP; when the LP is infeasible or a is not finite (an r_t = 0) alpha = r / sum(r);
    and the weights returned are T alpha (that code's loss is sum_t T alpha_t l_t). C is still scaled to unit max
    entry, which leaves the LPs' feasible sets and maximizers unchanged.

    Args:
        eps: non-uniformity below which EPO switches from balancing to descent.
        lp: "mooframe" (default; the variant above) or "paper" (the published LPs, for reproduction).
        backend: LP solver: "simplex" (default; the same optima as HiGHS, faster than HiGHS direct on these
            tiny LPs), "highs" (dual simplex through highspy, faster than via cvxpy; needs mooframe[lp]) or "osqp"
            (ADMM through cvxpy, mooframe[lp]; reports tight LPs infeasible and falls back more often). Figures:
            docs/benchmarks.md (benchmarks/solvers.py).
    """

    registry_name = "epo"

    needs_gram = True
    needs_nonnegative_losses = True
    nonnegative_weights = True

    def __init__(self, eps: float = 1e-4, backend: str = "simplex", lp: str = "mooframe") -> None:
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown EPO backend {backend!r}; pass one of {', '.join(BACKENDS)}")
        if lp not in LP_VARIANTS:
            raise ValueError(f"unknown EPO lp {lp!r}; pass 'mooframe' (the default) or 'paper' (the published LPs)")
        self.eps, self.backend, self.lp = eps, backend, lp
        self._lps: SimplexLPs | HighsLPs | CvxpyLPs | None = None
        self._counts = dict.fromkeys(("balance", "descent", "vertex", "relaxed_fallbacks", "ls_fallbacks"), 0)

    def reset(self, n_objectives: int) -> None:
        super().reset(n_objectives)
        self._counts = dict.fromkeys(self._counts, 0)
        self._lps = None

    def _weights(self, losses: torch.Tensor, pref: torch.Tensor, gram: torch.Tensor | None) -> torch.Tensor:
        n = losses.numel()
        c = gram.numpy()
        r = pref.double().cpu().numpy()
        loss = losses.double().cpu().numpy()
        scale = float(np.abs(c).max())
        if n == 1 or scale == 0:  # one objective (r = [1]), or zero gradients: any alpha gives the same update
            return torch.as_tensor(r * (n if self.lp == "paper" else 1))
        if self._lps is None:
            self._lps = BACKENDS[self.backend]()
        if self.lp == "paper":
            return torch.as_tensor(n * self._paper_alpha(c / scale, r, loss))
        mu, a = non_uniformity(r * loss), adjustment(r, loss)
        if mu > self.eps and np.abs(a).max() <= _TINY:
            # r on the simplex's boundary with r l uniform on r's support (a vertex, say): the ray is met there and
            # the losses outside the support carry no preference, so descend the preferred ones alone
            self._counts["vertex"] += 1
            return torch.as_tensor(r)
        c = c / scale  # the LPs are invariant to scaling C; unit scale suits the LP tolerances
        mode = "balance" if mu > self.eps else "descent"
        self._counts[mode] += 1
        alpha = self._lps.solve(mode, balance_lp(c, a, r * loss) if mode == "balance" else descent_lp(c, a))
        if alpha is None:
            self._counts["relaxed_fallbacks"] += 1
            alpha = self._lps.solve("relaxed", relaxed_lp(c))
        if alpha is None:
            self._counts["ls_fallbacks"] += 1
            alpha = r
        return torch.as_tensor(alpha)

    def _paper_alpha(self, c: np.ndarray, r: np.ndarray, loss: np.ndarray) -> np.ndarray:
        """alpha of the published LP (balance or descent by mu), or r / sum(r) where it fails."""
        mu, a = _paper_adjustment(r, loss)
        if not np.isfinite(a).all():
            self._counts["ls_fallbacks"] += 1
            return r / r.sum()
        mode = "balance" if mu > self.eps else "descent"
        self._counts[mode] += 1
        alpha = self._lps.solve(mode, _paper_balance_lp(c, a, r * loss) if mode == "balance" else descent_lp(c, a, 0.0))
        if alpha is None:
            self._counts["ls_fallbacks"] += 1
            return r / r.sum()
        return alpha

    def stats(self) -> dict[str, float]:
        """LPs solved in each mode, steps at the simplex's boundary that needed none (`vertex`: alpha = r), fallbacks
        taken, and solutions the backend flagged as inaccurate."""
        inaccurate = self._lps.inaccurate if self._lps is not None else 0
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


def balance_scale(a: np.ndarray) -> np.ndarray:
    """a / max_t |a_t|: the ascent the balance LP allows, (C a)_j, on the scale of C alpha for alpha on the simplex.

    Unscaled, a vanishes near the simplex's vertices (a ~ l_hat_t log(1 / l_hat_t) as r_t -> 0), and with it the
    ascent allowed on the unpreferred losses: EPO then stops short of the experts at e_t (docs/solvers.md).
    """
    peak = np.abs(a).max()
    return a / peak if peak > 0 else a


def balance_lp(c: np.ndarray, a: np.ndarray, rl: np.ndarray) -> LP:
    """max alpha^T C a  s.t.  (C alpha)_j >= (C a)_j where (C a)_j <= 0, (C alpha)_j >= 0 for the largest r_j l_j
    (C alpha >= 0 when no (C a)_j > 0), with a scaled to unit max entry (`balance_scale`)."""
    ca = c @ balance_scale(a)
    active = ca <= 0  # losses that must not rise faster than the adjustment asks
    if active.all():
        rhs = np.zeros(len(ca))
    else:
        worst = rl == rl.max()  # the largest relative loss must not increase
        active, rhs = active | worst, np.where(worst, 0.0, ca)
    return LP(ca, c[active], rhs[active] - _SLACK)


def descent_lp(c: np.ndarray, a: np.ndarray, slack: float = _SLACK) -> LP:
    """max 1^T C alpha  s.t.  alpha^T C a >= min(max_j (C a)_j, 0),  C alpha >= 0 (each row loosened by `slack`)."""
    ca = c @ a
    return LP(c.sum(0), np.vstack([ca, c]), np.concatenate([[min(ca.max(), 0.0)], np.zeros(len(c))]) - slack)


def _paper_adjustment(r: np.ndarray, losses: np.ndarray) -> tuple[float, np.ndarray]:
    """(mu, a) as EPOSearch computes them: l_hat = r l / sum(r l), mu over the l_hat above machine epsilon,
    a = r (log(T l_hat) - mu), unclipped (so a is NaN where r_t = 0)."""
    rl = r * losses
    with np.errstate(divide="ignore", invalid="ignore"):
        l_hat = rl / rl.sum()
        kept = l_hat[l_hat > np.finfo(l_hat.dtype).eps]
        mu = float(np.sum(kept * np.log(kept * len(rl))))
        return mu, r * (np.log(l_hat * len(rl)) - mu)


def _paper_balance_lp(c: np.ndarray, a: np.ndarray, rl: np.ndarray) -> LP:
    """The published balance LP: max alpha^T C a  s.t.  (C alpha)_j >= (C a)_j for the j with (C a)_j <= 0 and
    (C alpha)_j >= 0 for the largest r_j l_j when some (C a)_j > 0, else C alpha >= 0; a unscaled, no slack."""
    ca = c @ a
    ascent = ca > 0
    if not ascent.any():
        return LP(ca, c, np.zeros(len(ca)))
    worst = rl == rl.max()
    rows = ~ascent | worst
    return LP(ca, c[rows], np.where(worst, 0.0, ca)[rows])


def relaxed_lp(c: np.ndarray) -> LP:
    """max 1^T C alpha  s.t.  C alpha >= 0: the descent LP without its alpha^T C a constraint."""
    return LP(c.sum(0), c, np.full(len(c), -_SLACK))


LP_VARIANTS = ("mooframe", "paper")
