"""A dense simplex method for tiny LPs over the probability simplex (EPO's LPs: T <= ~16 weights)."""

from __future__ import annotations

import numpy as np

_OPTIMALITY_TOL = 1e-11  # reduced costs above -tol count as optimal (the data are scaled to unit max entry)
_PIVOT_TOL = 1e-9  # smaller tableau entries are rounding, never pivots
_TIE_TOL = 1e-12  # ratios this close are ties (and a ratio this small a degenerate pivot)


def simplex_lp(cost: np.ndarray, rows: np.ndarray, lower: np.ndarray, max_pivots: int = 1000) -> np.ndarray | None:
    """argmax cost^T x  s.t.  x >= 0, sum(x) = 1, rows @ x >= lower; None if infeasible (or out of pivots).

    Primal simplex on the dual  min t - lower^T y  s.t.  t 1 - rows^T y - s = cost, y, s >= 0, t free,  which is
    feasible at y = 0, t = max(cost), so it needs no phase I; the dual is unbounded iff the primal is infeasible.
    x is read off the optimal tableau: x_j is the reduced cost of the slack s_j. Dantzig's rule, switching to
    Bland's rule at the first degenerate pivot so that it cannot cycle.
    """
    n, m = len(cost), len(lower)
    k = int(np.argmax(cost))
    # Canonical tableau over (y, s | right-hand side) for the basis {t in row k, s_j in row j != k}: row j is
    # constraint k minus constraint j, which eliminates t. t is eliminated from the objective with constraint k;
    # row k is left all zero (t is free and never leaves, so its row never blocks a pivot).
    tableau = np.zeros((n, m + n + 1))
    tableau[:, :m] = rows.T - rows[:, k]
    tableau[:, m : m + n] = np.eye(n)
    tableau[:, m + k] -= 1.0
    tableau[:, -1] = cost[k] - cost
    reduced = np.zeros(m + n + 1)  # reduced costs of (y, s), then minus the objective value
    reduced[:m] = rows[:, k] - lower
    reduced[m + k] = 1.0
    reduced[-1] = -cost[k]
    basic = np.arange(m, m + n)  # the variable of each row (row k: t, never compared)
    bland = False
    pivots = 0
    while True:
        costs = reduced[:-1]
        enter = int(np.argmax(costs < -_OPTIMALITY_TOL)) if bland else int(costs.argmin())
        if costs[enter] >= -_OPTIMALITY_TOL:
            return reduced[m:-1].copy()
        if pivots >= max_pivots:
            return None
        column = tableau[:, enter]
        candidates = np.flatnonzero(column > _PIVOT_TOL)
        if len(candidates) == 0:
            return None  # the dual objective decreases without bound along this edge: the primal is infeasible
        ratios = tableau[candidates, -1] / column[candidates]
        least = ratios.min()
        ties = candidates[ratios <= least + _TIE_TOL]
        bland = bland or least <= _TIE_TOL
        leave = ties[basic[ties].argmin()] if bland else ties[column[ties].argmax()]
        pivot_row = tableau[leave] / column[leave]
        tableau -= np.outer(column, pivot_row)
        tableau[leave] = pivot_row
        reduced -= reduced[enter] * pivot_row
        basic[leave] = enter
        pivots += 1
