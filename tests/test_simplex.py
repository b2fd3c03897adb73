"""EPO's LPs: the dense simplex method against HiGHS (scipy's linprog, tight tolerances) as the reference, and every
LP backend on hand-worked LPs (optimum, infeasibility, a persistent model re-solved, what the cvxpy one counts)."""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest
from scipy.optimize import linprog

from mooframe.solvers.epo import adjustment, balance_lp, balance_scale, descent_lp, non_uniformity, relaxed_lp
from mooframe.solvers.lp_backends import LP, CvxpyLPs, HighsLPs, SimplexLPs
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


def _capped(cap: float) -> LP:
    """max alpha_1 s.t. alpha_1 <= cap (the row -alpha_1 >= -cap): alpha = (cap, 1 - cap)."""
    return LP(np.array([1.0, 0.0]), np.array([[-1.0, 0.0]]), np.array([-cap]))


#: max alpha_1 + 2 alpha_3 s.t. alpha_3 <= 0.25, alpha_1 >= 0.5 (two rows): alpha = (0.75, 0, 0.25)
TWO_ROWS = LP(np.array([1.0, 0.0, 2.0]), np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]), np.array([-0.25, 0.5]))
#: alpha_1 + alpha_2 >= 2 cannot hold on the simplex
INFEASIBLE = LP(np.array([1.0, 0.0]), np.array([[1.0, 1.0]]), np.array([2.0]))


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
@pytest.mark.parametrize("make", [SimplexLPs, HighsLPs, CvxpyLPs, lambda: CvxpyLPs("HIGHS")])
def test_every_backend_finds_the_hand_worked_optima_and_reports_infeasible_lps(make):
    lps = make()
    atol = 1e-3 if isinstance(lps, CvxpyLPs) and lps.solver == "OSQP" else 1e-9  # ADMM's tolerance
    for cap in (0.3, 0.6, 0.3):  # the same kind again: a persistent model gets the new rows, not extra ones
        alpha = lps.solve("balance", _capped(cap))
        np.testing.assert_allclose(alpha, [cap, 1 - cap], atol=atol)
        assert alpha.sum() == pytest.approx(1.0, abs=1e-12) and alpha.min() >= 0
    np.testing.assert_allclose(lps.solve("balance", TWO_ROWS), [0.75, 0.0, 0.25], atol=atol)
    np.testing.assert_allclose(lps.solve("descent", _capped(0.4)), [0.4, 0.6], atol=atol)
    assert lps.solve("relaxed", INFEASIBLE) is None
    np.testing.assert_allclose(lps.solve("relaxed", _capped(0.2)), [0.2, 0.8], atol=atol)
    assert lps.inaccurate == 0 or isinstance(lps, CvxpyLPs)


def test_the_cvxpy_backend_solves_with_the_solver_it_names():
    assert CvxpyLPs().solver == "OSQP"
    for name in ("OSQP", "HIGHS"):
        lps = CvxpyLPs(name)
        lps.solve("balance", _capped(0.3))
        ((problem, *_),) = lps.problems.values()
        assert problem.solver_stats.solver_name == name


def test_the_cvxpy_backend_counts_inaccurate_answers_and_rejects_failed_ones(monkeypatch):
    outcomes = iter(
        [
            (cp.OPTIMAL_INACCURATE, [0.5, 0.5]),
            (cp.OPTIMAL, [1.0, 0.0]),
            (cp.OPTIMAL_INACCURATE, [0.25, 0.75]),
            (cp.OPTIMAL_INACCURATE, None),  # no values despite the status
            (cp.INFEASIBLE, [0.5, 0.5]),
            (cp.SolverError, None),
            (cp.OPTIMAL, [np.nan, 1.0]),
        ]
    )

    def solve(problem, solver=None):
        status, value = next(outcomes)
        if status is cp.SolverError:
            raise cp.SolverError("the solver failed")
        (alpha,) = problem.variables()
        alpha.save_value(None if value is None else np.array(value))  # unchecked, as a solver would leave it
        problem._status = status

    monkeypatch.setattr(cp.Problem, "solve", solve)
    lps = CvxpyLPs()
    answers = [lps.solve("balance", _capped(0.3)) for _ in range(7)]
    assert [None if a is None else a.tolist() for a in answers] == [
        [0.5, 0.5], [1.0, 0.0], [0.25, 0.75], None, None, None, None
    ]  # fmt: skip
    assert lps.inaccurate == 3


def test_epos_lp_inputs_at_their_edge_cases_by_hand():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0 / 0 on the way
        assert non_uniformity(np.zeros(2)) == 0.0  # all losses zero: on every ray
        assert balance_scale(np.zeros(2)).tolist() == [0.0, 0.0]
    assert balance_scale(np.array([0.5, -2.0])).tolist() == [0.25, -1.0]
    # (C a) = (-1, 0): a zero entry does not rise, so it is constrained like the falling one; no r_j l_j row needed
    lp = balance_lp(np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([-1.0, 1.0]), np.array([1.0, 2.0]))
    assert lp.cost.tolist() == [-1.0, 0.0] and lp.rows.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    np.testing.assert_array_equal(lp.lower, [-1e-6, -1e-6])
