"""EPO: exact Pareto optimal search along a preference ray."""

from __future__ import annotations

import os
import sys
import warnings
from typing import NamedTuple

import numpy as np
import torch

from mooframe.optional import requires
from mooframe.solver import Solver
from mooframe.solvers.gram import check_gram
from mooframe.solvers.simplex import simplex_lp

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

    needs_gram = True

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

    def weights(self, losses: torch.Tensor, pref: torch.Tensor, gram: torch.Tensor | None = None) -> torch.Tensor:
        n = losses.numel()
        c = check_gram(gram, n, "EPO")
        r = pref.detach().double().cpu().numpy()
        loss = losses.detach().double().cpu().numpy()
        if (loss < 0).any():
            raise ValueError(f"EPO needs non-negative losses (it balances r * l on a log scale); got {loss.tolist()}")
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
        mu, a = paper_adjustment(r, loss)
        if not np.isfinite(a).all():
            self._counts["ls_fallbacks"] += 1
            return r / r.sum()
        mode = "balance" if mu > self.eps else "descent"
        self._counts[mode] += 1
        alpha = self._lps.solve(mode, paper_balance_lp(c, a, r * loss) if mode == "balance" else descent_lp(c, a, 0.0))
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


class LP(NamedTuple):
    """max cost^T alpha  s.t.  alpha >= 0, sum(alpha) = 1, rows @ alpha >= lower."""

    cost: np.ndarray
    rows: np.ndarray
    lower: np.ndarray


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


def paper_adjustment(r: np.ndarray, losses: np.ndarray) -> tuple[float, np.ndarray]:
    """(mu, a) as EPOSearch computes them: l_hat = r l / sum(r l), mu over the l_hat above machine epsilon,
    a = r (log(T l_hat) - mu), unclipped (so a is NaN where r_t = 0)."""
    rl = r * losses
    with np.errstate(divide="ignore", invalid="ignore"):
        l_hat = rl / rl.sum()
        kept = l_hat[l_hat > np.finfo(l_hat.dtype).eps]
        mu = float(np.sum(kept * np.log(kept * len(rl))))
        return mu, r * (np.log(l_hat * len(rl)) - mu)


def paper_balance_lp(c: np.ndarray, a: np.ndarray, rl: np.ndarray) -> LP:
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


class SimplexLPs:
    """EPO's LPs solved by `simplex_lp`, a dense simplex method written for these tiny LPs (no solver library)."""

    inaccurate = 0  # the simplex method returns an optimal vertex or None, never an inaccurate solution

    def solve(self, kind: str, lp: LP) -> np.ndarray | None:
        """The LP's optimal alpha, or None if it is infeasible; `kind` is not needed (nothing is kept between LPs)."""
        alpha = simplex_lp(*lp)
        return None if alpha is None else _on_simplex(alpha)


class HighsLPs:
    """EPO's LPs solved by HiGHS directly: one persistent model per LP kind, its objective and rows replaced in
    place each solve, so the dual simplex restarts from the previous basis."""

    def __init__(self) -> None:
        self.inaccurate = 0  # HiGHS returns an optimal vertex or a failure, never an inaccurate solution
        self._models: dict[str, tuple] = {}  # kind -> (Highs, row starts, column indices) of a dense row block

    def solve(self, kind: str, lp: LP) -> np.ndarray | None:
        """The LP's optimal alpha, or None if HiGHS finds it infeasible or fails."""
        with requires("lp"):
            import highspy

        n, m = len(lp.cost), len(lp.lower)
        if kind not in self._models or self._models[kind][0].getNumCol() != n:
            highs, index = _silent_highs(), np.arange(n, dtype=np.int32)
            highs.changeObjectiveSense(highspy.ObjSense.kMaximize)
            highs.addVars(n, np.zeros(n), np.full(n, highspy.kHighsInf))
            highs.addRow(1.0, 1.0, n, index, np.ones(n))  # the simplex; every other row is replaced each solve
            self._models[kind] = (highs, n * np.arange(n + 1, dtype=np.int32), np.tile(index, n + 1))
        highs, starts, columns = self._models[kind]
        highs.changeColsCost(n, columns[:n], lp.cost)
        old = highs.getNumRow() - 1
        highs.deleteRows(old, np.arange(1, old + 1, dtype=np.int32))
        highs.addRows(m, lp.lower, np.full(m, highspy.kHighsInf), m * n, starts[:m], columns[: m * n], lp.rows.ravel())
        highs.run()
        if highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None
        return _on_simplex(np.array(highs.getSolution().col_value))


class CvxpyLPs:
    """EPO's LPs as cvxpy problems with Parameters (DPP), each compiled once per shape and re-solved by `solver`."""

    def __init__(self, solver: str = "OSQP") -> None:
        self.solver, self.inaccurate = solver, 0
        self.problems: dict[tuple[int, int], tuple] = {}  # (rows, T) -> (problem, alpha, cost, rows, lower)
        if solver == "HIGHS":
            _silent_highs()

    def solve(self, kind: str, lp: LP) -> np.ndarray | None:
        """The LP's alpha, or None if it failed; `kind` is not needed here (the problems are keyed by shape)."""
        with requires("lp"):
            import cvxpy as cp

        shape = lp.rows.shape
        if shape not in self.problems:
            alpha, cost, rows, lower = (
                cp.Variable(shape[1]),
                cp.Parameter(shape[1]),
                cp.Parameter(shape),
                cp.Parameter(shape[0]),
            )
            problem = cp.Problem(cp.Maximize(cost @ alpha), [alpha >= 0, cp.sum(alpha) == 1, rows @ alpha >= lower])
            self.problems[shape] = (problem, alpha, cost, rows, lower)
        problem, alpha, *parameters = self.problems[shape]
        for parameter, value in zip(parameters, lp, strict=True):
            parameter.value = value
        try:
            with warnings.catch_warnings():  # an inaccurate solution is still a usable direction; counted instead
                warnings.simplefilter("ignore")
                problem.solve(solver=self.solver)
        except cp.SolverError:
            return None
        if problem.status == cp.OPTIMAL_INACCURATE:
            self.inaccurate += 1
        elif problem.status != cp.OPTIMAL:
            return None
        return None if alpha.value is None else _on_simplex(alpha.value)


BACKENDS = {"simplex": SimplexLPs, "highs": HighsLPs, "osqp": CvxpyLPs}
LP_VARIANTS = ("mooframe", "paper")


def _on_simplex(alpha: np.ndarray) -> np.ndarray | None:
    """The solver's alpha clipped to >= 0 and renormalized (it satisfies the constraints up to tolerance)."""
    if not np.isfinite(alpha).all():
        return None
    alpha = np.clip(alpha, 0.0, None)
    return alpha / alpha.sum() if alpha.sum() > 0 else None


_banner_hidden = False


def _silent_highs():
    """A HiGHS model that prints nothing; the first one in a process prints a banner from C, so stdout (fd 1) is
    pointed at /dev/null while it is made."""
    with requires("lp"):
        import highspy

    global _banner_hidden
    if _banner_hidden:
        highs = highspy.Highs()
    else:
        sys.stdout.flush()
        saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            highs = highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
        _banner_hidden = True
    highs.setOptionValue("output_flag", False)
    return highs
