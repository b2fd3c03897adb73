"""LP backends of EPO: max cost^T alpha over the simplex s.t. rows alpha >= lower, solved by mooframe's dense
simplex method (`simplex_lp`), by HiGHS (highspy) or by OSQP (cvxpy)."""

from __future__ import annotations

import os
import sys
import warnings
from typing import NamedTuple

import numpy as np

from mooframe.optional import requires
from mooframe.solvers.simplex import simplex_lp


class LP(NamedTuple):
    """max cost^T alpha  s.t.  alpha >= 0, sum(alpha) = 1, rows @ alpha >= lower."""

    cost: np.ndarray
    rows: np.ndarray
    lower: np.ndarray


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
