"""The dense simplex method for EPO's LPs against HiGHS (scipy's linprog, tight tolerances) as the reference."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog

from mooframe.solvers.epo import adjustment, balance_lp, descent_lp, relaxed_lp
from mooframe.solvers.simplex import simplex_lp

TOLERANCES = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


def reference(cost: np.ndarray, rows: np.ndarray, lower: np.ndarray) -> tuple[float, np.ndarray] | None:
    """HiGHS's optimal value and x for max cost^T x on the simplex s.t. rows @ x >= lower; None if infeasible."""
    n = len(cost)
    res = linprog(-cost, A_ub=-rows, b_ub=-lower, A_eq=np.ones((1, n)), b_eq=[1.0], method="highs", options=TOLERANCES)
    assert res.status in (0, 2), res.message  # optimal or infeasible: the simplex-constrained LP is never unbounded
    return (-res.fun, res.x) if res.status == 0 else None


def assert_solves(cost: np.ndarray, rows: np.ndarray, lower: np.ndarray, unique: bool = False) -> bool:
    """simplex_lp agrees with HiGHS: both infeasible, or a feasible x with HiGHS's optimal value; True if feasible."""
    x, expected = simplex_lp(cost, rows, lower), reference(cost, rows, lower)
    assert (x is None) == (expected is None)
    if x is None:
        return False
    assert x.min() >= -1e-12 and abs(x.sum() - 1) <= 1e-12 and (rows @ x - lower).min() >= -1e-10
    assert abs(cost @ x - expected[0]) <= 1e-9
    if unique:
        np.testing.assert_allclose(x, expected[1], atol=1e-6)
    return True


def test_simplex_matches_highs_on_epo_lps():
    rng = np.random.default_rng(0)
    feasible = infeasible = deficient = 0
    for n in (2, 3, 8):
        for rank in (n, max(n // 2, 1), 1):
            for on_ray in (False, True):
                for _ in range(12):
                    grads = rng.normal(size=(n, rank)) * rng.uniform(0.1, 3.0, size=(n, 1))
                    c = grads @ grads.T
                    c /= np.abs(c).max()
                    pref = rng.dirichlet(np.ones(n))
                    losses = (1 + rng.uniform(-1e-5, 1e-5, n)) / pref if on_ray else rng.uniform(0.5, 2.0, n)
                    a = adjustment(pref, losses)
                    for lp in (balance_lp(c, a, pref * losses), descent_lp(c, a), relaxed_lp(c)):
                        solved = assert_solves(*lp, unique=rank == n)  # full-rank C: a unique optimal vertex
                        feasible, infeasible = feasible + solved, infeasible + (not solved)
                        deficient += solved and rank < n
    assert feasible > 500 and infeasible > 0 and deficient > 200


def test_simplex_reports_infeasible_lps():
    rng = np.random.default_rng(1)
    for n in (2, 3, 8):
        for _ in range(20):
            rows = rng.normal(size=(n + 1, n))
            lower = rng.uniform(-1.0, 0.0, n + 1)
            i = rng.integers(n + 1)
            lower[i] = rows[i].max() + rng.uniform(1e-6, 1.0)  # above rows[i] @ x at every x on the simplex
            cost = rng.normal(size=n)
            assert simplex_lp(cost, rows, lower) is None and reference(cost, rows, lower) is None


def test_simplex_terminates_on_degenerate_lps():
    # Beale's cycling example as the dual of an LP of this form: two of its three rows start degenerate (at zero).
    beale = np.array([[0.25, -8.0, -1.0, 9.0], [0.5, -12.0, -0.5, 3.0], [0.0, 0.0, 1.0, 0.0]])
    cost, rows = np.array([0.0, 0.0, 0.0, -1.0]), np.hstack([np.zeros((4, 1)), beale.T])
    lower = -1e-2 * np.array([-0.75, 20.0, -0.5, 6.0])
    assert assert_solves(cost, rows, lower)
    assert simplex_lp(cost, rows, lower, max_pivots=1) is None  # out of pivots: None, and EPO falls back
    # Small integers: tied costs and many constraints tight at the same vertex.
    rng = np.random.default_rng(2)
    solved = 0
    for _ in range(300):
        n, m = rng.integers(2, 7), rng.integers(1, 8)
        cost, rows, lower = rng.integers(-2, 3, n), rng.integers(-2, 3, (m, n)), rng.integers(-2, 2, m)
        solved += assert_solves(cost.astype(float), rows.astype(float), lower.astype(float))
    assert 50 < solved < 300
