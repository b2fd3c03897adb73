"""Solvers: EPO's ray exactness, MGDA's exactness, scalarization gradients, torchjd weightings, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mooframe import solve
from mooframe.pareto_set import ParetoSetModel
from mooframe.problem import Problem
from mooframe.registry import SOLVERS, build_solver, resolve
from mooframe.solver import Solver
from mooframe.solvers.epo import EPO
from mooframe.solvers.lp_backends import BACKENDS, LP, CvxpyLPs, HighsLPs
from mooframe.solvers.ls import LinearScalarization
from mooframe.solvers.mgda import MGDA, min_norm_weights
from mooframe.solvers.smooth_tchebycheff import SmoothTchebycheff
from mooframe.solvers.tchebycheff import Tchebycheff

GRAM_SOLVERS = [name for name in sorted(SOLVERS) if resolve("solver", name).needs_gram]


def kl_to_uniform(rl: np.ndarray) -> float:
    """mu(r l) = sum_t p_t log(T p_t), p = r l / sum(r l), 0 log 0 = 0: written here, independently of epo.py."""
    p = np.asarray(rl, dtype=float) / np.sum(rl)
    return float(sum(q * np.log(len(p) * q) for q in p if q > 0))


def epo_adjustment(r: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """a_t = r_t (log(T p_t) - mu) of the EPO paper, with p_t = r_t l_t / sum(r l) (all p_t > 0 here)."""
    rl = r * losses
    p = rl / rl.sum()
    return r * (np.log(len(p) * p) - kl_to_uniform(rl))


def test_the_independent_epo_quantities_match_hand_worked_values():
    # r l = (1, 3): p = (1/4, 3/4), mu = 1/4 log(1/2) + 3/4 log(3/2); a = r (log(2 p) - mu)
    mu = 0.25 * np.log(0.5) + 0.75 * np.log(1.5)
    assert kl_to_uniform(np.array([1.0, 3.0])) == pytest.approx(mu) and kl_to_uniform(np.array([2.0, 2.0])) == 0.0
    np.testing.assert_allclose(
        epo_adjustment(np.array([0.5, 0.5]), np.array([2.0, 6.0])), 0.5 * (np.log([0.5, 1.5]) - mu)
    )


class TwoQuadratics(Problem):
    """l_1 = ||x - a||^2 + 0.01, l_2 = ||x - b||^2 + 0.01 in the plane: the Pareto set is the segment [a, b]."""

    def __init__(self) -> None:
        self.a, self.b = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0])

    @property
    def n_objectives(self) -> int:
        return 2

    def _losses(self, solution: torch.Tensor, batch: object = None) -> torch.Tensor:
        return torch.stack([((solution - self.a) ** 2).sum(), ((solution - self.b) ** 2).sum()]) + 0.01


class OnePoint(ParetoSetModel):
    """A single trainable point, whatever the preference: learns the solution for one fixed preference."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        self.x = torch.nn.Parameter(torch.tensor([0.3, 0.8]))

    def forward(self, pref: torch.Tensor) -> torch.Tensor:
        return self.x


class FixedPreference(Solver):
    """Hands `inner` the preference r instead of the sampled one, so solve() optimizes for r only."""

    def __init__(self, inner: Solver, r: list[float]) -> None:
        self.inner, self.r = inner, torch.tensor(r)
        self.needs_gram = inner.needs_gram

    def _weights(self, losses: torch.Tensor, pref: torch.Tensor, gram: torch.Tensor | None) -> torch.Tensor:
        return self.inner.weights(losses, self.r, gram)


def test_epo_ends_on_the_preference_ray_where_ls_does_not():
    r = [0.2, 0.8]
    ends = {}
    for name, inner in (("epo", EPO()), ("ls", LinearScalarization())):
        problem = TwoQuadratics()
        result = solve(
            problem,
            OnePoint(problem),
            FixedPreference(inner, r),
            steps=150,
            lr=0.05,
            optimizer="sgd",
            lr_schedule="constant",
            progress=False,
        )
        ends[name] = problem.losses(result.model.x.detach()).double().numpy()
    assert kl_to_uniform(np.array(r) * ends["epo"]) <= 1e-3
    assert kl_to_uniform(np.array(r) * ends["ls"]) > 0.1
    # both end on the Pareto front: the point lies on the segment between the two minima
    for losses in ends.values():
        assert np.sqrt(losses[0] - 0.01) + np.sqrt(losses[1] - 0.01) == pytest.approx(1.0, abs=1e-3)


def _random_gram(n: int, rank: int, rng: np.random.Generator) -> np.ndarray:
    grads = rng.normal(size=(n, rank)) * rng.uniform(0.1, 10.0, size=(n, 1))
    return grads @ grads.T


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
@pytest.mark.parametrize("n", [2, 3, 8])
def test_mgda_is_the_exact_min_norm_point(n):
    import cvxpy as cp

    rng = np.random.default_rng(n)
    for rank in sorted({1, 2, n, 3 * n}):  # rank-deficient Gram matrices included
        for _ in range(5):
            gram = _random_gram(n, rank, rng)
            w = min_norm_weights(gram)
            value, qw = w @ gram @ w, gram @ w
            scale = np.max(np.diag(gram))
            # KKT: w on the simplex, (Q w)_t >= w^T Q w for all t, with equality on the support
            assert np.all(w >= 0) and w.sum() == pytest.approx(1.0, abs=1e-12)
            assert np.all(qw >= value - 1e-10 * scale)
            np.testing.assert_allclose(qw[w > 1e-9], value, atol=1e-10 * scale)
            x = cp.Variable(n)
            problem = cp.Problem(cp.Minimize(cp.quad_form(x, cp.psd_wrap(gram))), [x >= 0, cp.sum(x) == 1])
            problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-14, tol_gap_rel=1e-14, tol_feas=1e-14)
            assert value == pytest.approx(problem.value, abs=1e-9)


def test_gram_solvers_reject_non_finite_gram_matrices():
    gram = torch.tensor([[1.0, float("nan")], [float("nan"), 1.0]])
    for name in GRAM_SOLVERS:
        with pytest.raises(ValueError, match="NaN or inf"):
            build_solver(name).weights(torch.ones(2), torch.tensor([0.5, 0.5]), gram)
        with pytest.raises(ValueError, match="Gram matrix"):
            build_solver(name).weights(torch.ones(2), torch.tensor([0.5, 0.5]), None)


@pytest.mark.parametrize("name", GRAM_SOLVERS)
def test_gram_solvers_are_well_defined_for_zero_gradients_and_one_objective(name):
    solver = build_solver(name)
    solver.reset(3)
    w = solver.weights(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.2, 0.3, 0.5]), torch.zeros(3, 3))
    solver.reset(1)
    assert solver.weights(torch.tensor([1.0]), torch.tensor([1.0]), torch.ones(1, 1)).tolist() == [1.0]
    # zero gradients: any weights give the zero update; MGDA answers 1/T, the others the preference r
    assert w.tolist() == pytest.approx([1 / 3] * 3 if name == "mgda" else [0.2, 0.3, 0.5])


@pytest.mark.parametrize("r1", [1e-2, 1e-6, 0.0])
def test_epo_at_and_near_a_vertex_descends_the_preferred_loss_alone(r1):
    # conflicting gradients (g1 . g2 < 0); r l is far from uniform towards task 2, whose ray lies beyond the front:
    # EPO must give up task 1 for task 2 (alpha = e_2), as it does at the vertex itself
    grads = torch.tensor([[1.0, 0.2], [-0.5, 1.0]], dtype=torch.float64)
    solver = EPO()
    solver.reset(2)
    alpha = solver.weights(torch.tensor([1.0, 0.1]), torch.tensor([r1, 1 - r1]), grads @ grads.T)
    assert alpha.tolist() == pytest.approx([0.0, 1.0], abs=1e-9)
    assert solver.stats()["vertex" if r1 == 0 else "balance"] == 1  # the vertex itself needs no LP


def test_epo_falls_back_to_relaxed_lp_then_ls_weights_and_counts_it(monkeypatch):
    from mooframe.solvers import epo

    monkeypatch.setattr(epo.SimplexLPs, "solve", lambda self, kind, lp: None)  # the default backend
    solver = EPO()
    solver.reset(2)
    pref = torch.tensor([0.25, 0.75])
    for _ in range(2):
        w = solver.weights(torch.tensor([1.0, 2.0]), pref, torch.eye(2))
        assert w.tolist() == pytest.approx(pref.tolist())
    assert solver.stats()["relaxed_fallbacks"] == 2 and solver.stats()["ls_fallbacks"] == 2


@pytest.mark.parametrize("mode_losses", [[1.0, 3.0], [4.0, 1.0]])  # balance (off the ray), descent (on it)
def test_epo_backends_reach_the_same_lp_optimum(mode_losses):
    rng = np.random.default_rng(0)
    gram = _random_gram(2, 5, rng)
    losses, pref = np.array(mode_losses), np.array([0.2, 0.8])
    solvers = {backend: EPO(backend=backend) for backend in BACKENDS}
    w = {backend: s.weights(*map(torch.tensor, (losses, pref, gram))).numpy() for backend, s in solvers.items()}
    assert solvers["simplex"].stats() == solvers["highs"].stats() == solvers["osqp"].stats()
    # the LP optimum value is unique even where the optimal weights are not
    balance = solvers["simplex"].stats()["balance"] == 1
    a = epo_adjustment(pref, losses)
    direction = gram @ (a / np.abs(a).max()) if balance else gram.sum(0)
    assert w["simplex"] @ direction == pytest.approx(w["highs"] @ direction, rel=1e-9, abs=1e-12)
    assert w["simplex"] @ direction == pytest.approx(w["osqp"] @ direction, rel=1e-4, abs=1e-6)


def _reference_epo(losses: np.ndarray, pref: np.ndarray, gram: np.ndarray, eps: float = 1e-4) -> tuple:
    """EPO's LPs written out in cvxpy as in the paper, rebuilt every call and solved by Clarabel (interior point).

    Returns (balance mode?, fallbacks taken, alpha, optimal value, objective(v), slacks(v)): the LP that gave alpha
    maximizes objective(v) on the simplex s.t. every entry of slacks(v) >= 0.
    """
    import cvxpy as cp

    n, c, rl, slack = len(losses), gram / np.abs(gram).max(), pref * losses, 1e-6
    balance, x, a = kl_to_uniform(rl) > eps, cp.Variable(n), epo_adjustment(pref, losses)
    ca = c @ (a / np.abs(a).max() if balance else a)
    descent = (lambda v: np.ones(n) @ (c @ v), lambda v: [c @ v + slack])
    if not balance:
        lp = (descent[0], lambda v: [ca @ v - min(ca.max(), 0) + slack, c @ v + slack])
    elif (ca <= 0).all():
        lp = (lambda v: ca @ v, lambda v: [c @ v + slack])
    else:
        keep, rhs = (ca <= 0) | (rl == rl.max()), np.where(rl == rl.max(), 0.0, ca)
        lp = (lambda v: ca @ v, lambda v: [c[keep] @ v - rhs[keep] + slack])
    for fallbacks, (objective, slacks) in enumerate((lp, descent)):
        problem = cp.Problem(cp.Maximize(objective(x)), [x >= 0, cp.sum(x) == 1, *(g >= 0 for g in slacks(x))])
        problem.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        if problem.status == cp.OPTIMAL:
            return balance, fallbacks, x.value, problem.value, objective, slacks
    return balance, 2, pref, None, None, None


@pytest.mark.parametrize("backend", ["simplex", "highs"])
@pytest.mark.parametrize("n", [2, 3, 8])
@pytest.mark.parametrize("on_ray", [False, True])  # balance mode (losses off the ray), descent mode (on it)
def test_epo_lps_match_the_cvxpy_formulation(backend, n, on_ray):
    rng = np.random.default_rng(n)
    solver = EPO(backend=backend)  # one solver for all draws: HiGHS's persistent models are updated in place
    for rank in [n, n, n, max(n // 2, 1), 1]:  # rank-deficient ones included
        gram = _random_gram(n, rank, rng)
        pref = rng.dirichlet(np.ones(n))
        losses = (1 + rng.uniform(-1e-5, 1e-5, n)) / pref if on_ray else rng.uniform(0.5, 2.0, n)
        before = solver.stats()
        alpha = solver.weights(*map(torch.tensor, (losses, pref, gram))).numpy()
        balance, fallbacks, expected, value, objective, slacks = _reference_epo(losses, pref, gram)
        counts = {k: solver.stats()[k] - before[k] for k in before}
        assert counts["balance" if balance else "descent"] == 1
        assert (counts["relaxed_fallbacks"], counts["ls_fallbacks"]) == (min(fallbacks, 1), int(fallbacks == 2))
        if value is None:
            np.testing.assert_array_equal(alpha, pref)
            continue
        assert objective(alpha) == pytest.approx(value, abs=1e-8)
        assert min(np.min(g) for g in slacks(alpha)) >= -1e-9
        if rank == n:  # the optimal alpha is unique (a vertex); rank-deficient C may have a face of optima
            np.testing.assert_allclose(alpha, expected, atol=1e-5)


def test_epo_infeasible_descent_lp_falls_back_to_the_relaxed_lp():
    grads = np.array([[0.329, -0.259], [1.583, 1.32], [0.633, -2.204]])
    pref, losses = np.array([0.24, 0.58, 0.18]), np.array([4.178, 1.7241, 5.5531])  # near the ray: descent mode
    balance, fallbacks, expected, *_ = _reference_epo(losses, pref, grads @ grads.T)
    assert (balance, fallbacks) == (False, 1)  # no alpha on the simplex has alpha^T C a >= 0 and C alpha >= 0
    solver = EPO()
    alpha = solver.weights(*map(torch.tensor, (losses, pref, grads @ grads.T))).numpy()
    assert solver.stats() == {
        "balance": 0, "descent": 1, "vertex": 0, "relaxed_fallbacks": 1, "ls_fallbacks": 0, "inaccurate": 0
    }  # fmt: skip
    np.testing.assert_allclose(alpha, expected, atol=1e-7)


def test_epo_and_the_lp_backends_print_nothing_to_stdout_in_a_fresh_process():
    """HiGHS prints a banner from C when a process makes its first model: every backend hides it (the cvxpy one
    through HiGHS first), stdout is restored after, and the backends' answers are those computed here."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import json, numpy as np, torch; from mooframe.solvers.epo import EPO\n"
        "from mooframe.solvers.lp_backends import BACKENDS, LP, CvxpyLPs, HighsLPs\n"
        "lp = LP(np.array([1.0, 0.0]), np.array([[-1.0, 0.0]]), np.array([-0.3]))\n"
        "alphas = [lps.solve('balance', lp).tolist() for lps in (CvxpyLPs('HIGHS'), HighsLPs(), CvxpyLPs())]\n"
        "for backend in BACKENDS:\n"
        "    EPO(backend=backend).weights(torch.tensor([1.0, 3.0]), torch.tensor([0.5, 0.5]), torch.eye(2))\n"
        "print(json.dumps(alphas))\n"
    )
    root = Path(__file__).resolve().parents[1]  # the checkout under test, first on the child's sys.path
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    lp = LP(np.array([1.0, 0.0]), np.array([[-1.0, 0.0]]), np.array([-0.3]))
    here = [lps.solve("balance", lp).tolist() for lps in (CvxpyLPs("HIGHS"), HighsLPs(), CvxpyLPs())]
    assert run.stdout.endswith("\n") and run.stdout.count("\n") == 1  # the answers alone
    assert json.loads(run.stdout) == here


def test_highs_solves_print_no_log(capfd):
    lps = HighsLPs()
    for kind in ("balance", "descent"):
        lps.solve(kind, LP(np.array([1.0, 0.0]), np.array([[-1.0, 0.0]]), np.array([-0.3])))
    assert capfd.readouterr().out == ""


def test_tchebycheff_weights_are_the_gradient_of_the_scalarization():
    losses, pref, ideal = torch.tensor([0.7, 0.4, 0.9]), torch.tensor([0.2, 0.5, 0.3]), [0.1, 0.0, 0.2]
    for solver, scalarization in (
        (Tchebycheff(ideal=ideal), lambda v: torch.max(pref * (v - torch.tensor(ideal)))),
        (
            SmoothTchebycheff(mu=0.05, ideal=ideal),
            lambda v: 0.05 * torch.logsumexp(pref * (v - torch.tensor(ideal)) / 0.05, 0),
        ),
    ):
        point = losses.clone().requires_grad_()
        (expected,) = torch.autograd.grad(scalarization(point), point)
        torch.testing.assert_close(solver.weights(losses, pref), expected)


def test_smooth_tchebycheff_tends_to_tchebycheff_as_mu_vanishes():
    losses, pref = torch.tensor([0.7, 0.4]), torch.tensor([0.6, 0.4])
    torch.testing.assert_close(
        SmoothTchebycheff(mu=1e-4, ideal=[0, 0]).weights(losses, pref), Tchebycheff(ideal=[0, 0]).weights(losses, pref)
    )


def test_tracked_ideal_point_is_the_running_minimum_and_survives_a_checkpoint():
    solver = Tchebycheff(ideal=None)
    solver.reset(2)
    pref = torch.tensor([0.5, 0.5])
    for losses in ([0.9, 0.3], [0.5, 0.8], [0.7, 0.6]):
        solver.weights(torch.tensor(losses), pref)
    assert solver.state_dict()["running_min"] == pytest.approx([0.5, 0.3])
    restored = Tchebycheff(ideal=None)
    restored.load_state_dict(solver.state_dict())
    losses = torch.tensor([0.6, 0.35])
    torch.testing.assert_close(restored.weights(losses, pref), solver.weights(losses, pref))
    with pytest.raises(ValueError, match="one per objective"):
        Tchebycheff(ideal=[0.0]).reset(2)


@pytest.mark.parametrize("name, aggregator", [("upgrad", "UPGrad"), ("dualproj", "DualProj")])
def test_torchjd_weightings_match_torchjd_aggregators_and_do_not_conflict(name, aggregator):
    from torchjd import aggregation

    jacobian = torch.randn(3, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    jacobian[1] = -0.8 * jacobian[0] + 0.1 * jacobian[1]  # two conflicting tasks
    pref = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    w = build_solver(name).weights(torch.ones(3), pref, jacobian @ jacobian.T)
    direction = w.to(jacobian) @ jacobian
    torch.testing.assert_close(direction, getattr(aggregation, aggregator)(pref_vector=pref)(jacobian))
    # no task's loss increases to first order, up to torchjd's regularization of the Gram matrix (reg_eps=1e-4)
    assert torch.all(jacobian @ direction >= -1e-3 * (jacobian**2).sum(1).max())


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_every_solver_lowers_the_loss_at_fixed_preferences_on_zdt1(name):
    """The same fixed preferences before and after 6 steps: zero (or ignored) weights leave the losses unchanged."""
    kwargs = {"model": "hypernet", "solver": name, "progress": False, "model_kwargs": {"hidden": 16}}
    before, result = solve("zdt1", steps=0, **kwargs).front(n=5), solve("zdt1", steps=6, **kwargs)
    after = result.front(n=5)
    np.testing.assert_array_equal(before.prefs, after.prefs)
    weights = result.history["weight"]
    assert weights.shape == (6, 2) and np.isfinite(weights).all() and (weights >= -1e-9).all()
    # measured: every solver lowers the mean of r . f(r) over the grid by 0.008-0.009 (from 2.209) in 6 steps
    scalarized = {k: float((f.prefs * f.objectives).sum(1).mean()) for k, f in (("before", before), ("after", after))}
    assert scalarized["after"] < scalarized["before"] - 0.003
    assert after.objectives.sum(1).mean() < before.objectives.sum(1).mean() - 0.006
    if name == "epo":
        stats = result.settings["solver_stats"]
        assert stats["balance"] + stats["descent"] + stats["vertex"] == 6 and stats["ls_fallbacks"] == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backend": "glpk"}, "^unknown EPO backend 'glpk'; pass one of simplex, highs, osqp$"),
        ({"eps": 0}, "eps must be > 0"),
    ],
)
def test_bad_epo_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EPO(**kwargs)


def test_epo_rejects_negative_losses():
    with pytest.raises(ValueError, match="non-negative losses"):
        EPO().weights(torch.tensor([-1.0, 1.0]), torch.tensor([0.5, 0.5]), torch.eye(2))


@pytest.mark.slow
def test_epo_and_tchebycheff_cover_the_concave_zdt2_front_where_ls_reaches_one_end():
    """A short run; benchmarks/solvers_zdt2.py gives the full-length figures (EPO >= 0.97 of the true HV)."""
    from pymoo.indicators.hv import HV

    hv, ratios = HV(ref_point=np.array([1.1, 1.1])), {}
    for name in ("epo", "tchebycheff", "ls"):
        result = solve("zdt2", solver=name, steps=300, lr=1e-2, progress=False, model_kwargs={"hidden": 64})
        ratios[name] = hv(result.front(n=101).objectives) / hv(result.problem.true_front(1000))
    assert ratios["epo"] >= 0.95 and ratios["tchebycheff"] >= 0.95
    assert ratios["ls"] <= 0.25


def test_mgda_tolerance_is_checked_and_passed_to_wolfes_algorithm():
    for tol in (0.0, -1e-9):
        with pytest.raises(ValueError, match=f"tol must be > 0, got {tol}"):
            MGDA(tol=tol)
    gram = np.array([[2.0, 0.2, -0.3], [0.2, 1.0, 0.1], [-0.3, 0.1, 3.0]])
    exact = MGDA().weights(torch.ones(3), torch.full((3,), 1 / 3), torch.tensor(gram)).numpy()
    assert (exact > 0.1).all()  # an interior min-norm point
    # a gap tolerance of 10 x the largest squared norm stops Wolfe's algorithm at its start, the shortest gradient
    coarse = MGDA(tol=10.0).weights(torch.ones(3), torch.full((3,), 1 / 3), torch.tensor(gram)).numpy()
    np.testing.assert_array_equal(coarse, [0.0, 1.0, 0.0])


def test_min_norm_weights_on_hand_worked_gram_matrices():
    # orthogonal gradients of squared norms 1 and 4: w = (4, 1) / 5, |d|^2 = 4/5
    np.testing.assert_allclose(min_norm_weights(np.diag([1.0, 4.0])), [0.8, 0.2], atol=1e-12)
    # g_2 = 2 g_1: the shorter one alone (its multiple adds only length)
    np.testing.assert_allclose(min_norm_weights(np.array([[1.0, 2.0], [2.0, 4.0]])), [1.0, 0.0], atol=1e-12)
    # anti-parallel gradients of equal length: the origin is in the hull, w = (1/2, 1/2)
    np.testing.assert_allclose(min_norm_weights(np.array([[1.0, -1.0], [-1.0, 1.0]])), [0.5, 0.5], atol=1e-12)
    # three orthogonal gradients, squared norms 1, 2, 4: w_t proportional to 1 / |g_t|^2
    np.testing.assert_allclose(min_norm_weights(np.diag([1.0, 2.0, 4.0])), np.array([4, 2, 1]) / 7, atol=1e-12)
    np.testing.assert_allclose(min_norm_weights(np.zeros((2, 2))), [0.5, 0.5])
    # the answer does not depend on the gradients' scale, tiny or huge (the tolerance is relative to it)
    for scale in (1e-8, 0.1, 1e6):
        np.testing.assert_allclose(min_norm_weights(scale * np.diag([1.0, 4.0])), [0.8, 0.2], atol=1e-12)


class X(Solver):
    """A Gram-based solver that keeps the Gram matrix the base class hands it."""

    needs_gram = True

    def _weights(self, losses, pref, gram):
        self.seen = gram
        return torch.full((len(losses),), 1.0 / len(losses))


def test_the_gram_matrix_reaches_a_solver_symmetrized_in_float64_and_bad_ones_are_named():
    solver, losses, pref = X(), torch.ones(2), torch.tensor([0.5, 0.5])
    solver.weights(losses, pref, torch.tensor([[1.0, 2.0], [0.0, 3.0]]))
    np.testing.assert_array_equal(solver.seen, [[1, 1], [1, 3]])
    solver.weights(losses, pref, torch.eye(2, dtype=torch.float32))
    assert solver.seen.dtype == torch.float64
    with pytest.raises(ValueError, match=r"X got a Gram matrix of shape \(3, 3\) for 2 losses; pass the 2 x 2"):
        solver.weights(losses, pref, torch.eye(3))
    with pytest.raises(ValueError, match="X needs the Gram matrix of the task gradients"):
        solver.weights(losses, pref, None)
    with pytest.raises(ValueError, match="X got a Gram matrix with NaN or inf entries"):
        solver.weights(losses, pref, torch.tensor([[1.0, float("inf")], [float("inf"), 1.0]]))


def test_tchebycheff_puts_the_preference_weight_on_the_largest_weighted_gap():
    solver = Tchebycheff(ideal=[0.5, 0.0])
    solver.reset(2)
    # gaps r (l - z) = (0.6 * 0.5, 0.4 * 0.9) = (0.3, 0.36): objective 2 gets its r_2
    w = solver.weights(torch.tensor([1.0, 0.9]), torch.tensor([0.6, 0.4]))
    assert w.tolist() == pytest.approx([0.0, 0.4])
    assert Tchebycheff().weights(torch.tensor([1.0, 0.9]), torch.tensor([0.6, 0.4])).tolist() == pytest.approx(
        [0.6, 0.0]
    )  # z = 0: gaps (0.6, 0.36)
    assert Tchebycheff(ideal=0.8).weights(torch.tensor([1.0, 0.9]), torch.tensor([0.6, 0.4])).tolist() == (
        pytest.approx([0.6, 0.0])
    )  # a scalar ideal for every objective: gaps (0.12, 0.04)
    assert Tchebycheff(ideal=(1, 2)).ideal == [1.0, 2.0] and Tchebycheff(ideal=2).ideal == 2
    fresh = Tchebycheff(ideal=None)
    assert fresh.state_dict() == {"running_min": None}
    fresh.load_state_dict({"running_min": None})
    fresh.load_state_dict({})
    assert fresh.state_dict() == {"running_min": None}
    fresh.load_state_dict({"running_min": [0.25, 0.5]})
    assert fresh.ideal_point(torch.tensor([0.3, 0.2])).tolist() == pytest.approx([0.25, 0.2])
    tracked = Tchebycheff(ideal=None)
    tracked.weights(torch.tensor([0.4, 0.7]), torch.tensor([0.5, 0.5]))
    tracked.reset(2)  # a new run forgets the old running minimum
    assert tracked.state_dict() == {"running_min": None}


def test_smooth_tchebycheff_weights_by_hand_and_its_temperature_check():
    # gaps r (l - 0) = (0.2, 0.1); mu = 0.1: softmax (2, 1) = (e, 1) / (e + 1), times r
    w = SmoothTchebycheff(mu=0.1).weights(torch.tensor([0.4, 0.2]), torch.tensor([0.5, 0.5]))
    e = np.e
    assert w.tolist() == pytest.approx([0.5 * e / (e + 1), 0.5 / (e + 1)])
    assert SmoothTchebycheff().mu == 0.1 and SmoothTchebycheff().ideal == 0.0
    for mu in (0.0, -0.1):
        with pytest.raises(ValueError, match=f"mu must be > 0, got {mu}"):
            SmoothTchebycheff(mu=mu)


def test_torchjd_weightings_use_the_preference_only_when_asked():
    from torchjd import aggregation

    gram = torch.tensor([[2.0, -0.5, 0.1], [-0.5, 1.0, 0.2], [0.1, 0.2, 3.0]], dtype=torch.float64)
    pref = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    for name, weighting in (("upgrad", "UPGradWeighting"), ("dualproj", "DualProjWeighting")):
        with_pref = build_solver(name).weights(torch.ones(3), pref, gram)
        torch.testing.assert_close(with_pref, getattr(aggregation, weighting)(pref_vector=pref)(gram))
        without = build_solver(name, use_preference=False).weights(torch.ones(3), pref, gram)
        torch.testing.assert_close(without, getattr(aggregation, weighting)()(gram))
        assert not torch.allclose(with_pref, without)
    assert build_solver("upgrad").use_preference is True


def test_linear_scalarization_weights_are_the_preference_in_the_losses_dtype():
    w = LinearScalarization().weights(torch.ones(2, dtype=torch.float64), torch.tensor([0.3, 0.7]))
    assert w.dtype == torch.float64 and w.tolist() == pytest.approx([0.3, 0.7])


def test_the_affine_min_norm_point_of_affinely_dependent_support_points():
    """g_3 = (g_1 + g_2) / 2: the KKT system is singular (np.linalg.solve refuses it) and lstsq answers instead."""
    from mooframe.solvers.mgda import _affine_min_norm

    grads = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    coefficients = _affine_min_norm(grads @ grads.T, [0, 1, 2])
    assert coefficients.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(coefficients @ grads, [0.5, 0.5], atol=1e-12)  # the line's min-norm point
    np.testing.assert_allclose(coefficients, [1 / 3] * 3, atol=1e-12)  # lstsq's minimum-norm coefficients


@pytest.mark.parametrize(
    "name, label", [("epo", "EPO"), ("mgda", "MGDA"), ("upgrad", "UPGrad"), ("dualproj", "DualProj")]
)
def test_gram_errors_name_the_solver(name, label):
    with pytest.raises(ValueError, match=f"^{label} got a Gram matrix of shape"):
        build_solver(name).weights(torch.ones(2), torch.tensor([0.5, 0.5]), torch.eye(3))


def test_tchebycheff_defaults_dtypes_and_reset_by_hand():
    # the default ideal point is 0: gaps r l = (0.8, 0.7) put the weight on objective 1 (with z = 1: (0, 0.5), on 2)
    losses, pref = torch.tensor([1.0, 3.5]), torch.tensor([0.8, 0.2])
    assert Tchebycheff().weights(losses, pref).tolist() == pytest.approx([0.8, 0.0])
    # weights and ideal point come in the losses' dtype, whatever the preference's and the ideal's
    w = Tchebycheff(ideal=[0.5, 2.5]).weights(losses, pref.double())  # gaps (0.4, 0.2)
    assert w.dtype == torch.float32 and w.tolist() == pytest.approx([0.8, 0.0])
    assert Tchebycheff(ideal=[0.5, 0.25]).ideal_point(losses.double()).dtype == torch.float64
    # a restored running minimum keeps float64 precision (0.1 is not a float32)
    restored = Tchebycheff(ideal=None)
    restored.load_state_dict({"running_min": [0.1, 1 / 3]})
    point = restored.ideal_point(torch.ones(2, dtype=torch.float64))
    assert point.tolist() == [0.1, 1 / 3]
    solver = Tchebycheff()
    solver.reset(2)
    with pytest.raises(ValueError, match="reset for 2 objectives but got 3 losses"):
        solver.weights(torch.ones(3), torch.full((3,), 1 / 3))


@pytest.mark.parametrize(
    "grads, segment",
    [
        ([[0.5, 0.0], [0.5, -0.5], [0.0, 1.0], [1.5, -1.5]], (1, 2)),
        ([[1.0, 0.0, 0.5], [1.5, 0.5, 0.5], [1.0, 1.5, 1.0], [0.5, 0.0, -1.0], [0.5, -1.0, -1.0]], (2, 4)),
    ],
)
def test_min_norm_weights_where_wolfes_minor_cycle_steps_back(grads, segment):
    """Instances where the affine minimizer of the support leaves the hull, so Wolfe's minor cycle steps back and
    drops points: the answer is the min-norm point of the segment g_i g_j, in closed form."""
    g, (i, j) = np.array(grads), segment
    t = -g[j] @ (g[i] - g[j]) / np.sum((g[i] - g[j]) ** 2)  # x = g_j + t (g_i - g_j), t in (0, 1)
    expected = np.zeros(len(g))
    expected[i], expected[j] = t, 1 - t
    x = expected @ g
    assert 0 < t < 1 and np.all(g @ x >= x @ x - 1e-12)  # KKT: the segment's min-norm point is the hull's
    np.testing.assert_allclose(min_norm_weights(g @ g.T), expected, rtol=0, atol=1e-12)


def test_epo_needs_no_lp_for_one_objective_or_zero_gradients():
    for lp, scale in (("mooframe", 1), ("paper", 2)):  # the paper's weights are T alpha
        solver = EPO(lp=lp)
        w = solver.weights(torch.tensor([1.0, 3.0]), torch.tensor([0.25, 0.75]), torch.zeros(2, 2))
        assert w.tolist() == [0.25 * scale, 0.75 * scale]
        assert EPO(lp=lp).weights(torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([[4.0]])).tolist() == [1.0]
        one = EPO(lp=lp)
        one.weights(torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([[4.0]]))
        assert all(v == 0 for v in {**solver.stats(), **one.stats()}.values())  # no LP solved, no fallback


def test_the_vertex_rule_needs_mu_strictly_above_eps_and_is_counted():
    # r = e_1: l_hat = (1, 0), mu = log 2 exactly, a = 0: the vertex rule (alpha = r) applies iff mu > eps
    losses, vertex, gram = torch.tensor([1.0, 3.0]), torch.tensor([1.0, 0.0]), torch.tensor([[1.0, -0.5], [-0.5, 1.0]])
    for eps, counts in ((np.log(2), {"vertex": 0, "descent": 1}), (np.nextafter(np.log(2), 0), {"vertex": 2})):
        solver = EPO(eps=float(eps))
        for _ in range(sum(counts.values())):
            solver.weights(losses, vertex, gram)
        assert {k: solver.stats()[k] for k in counts} == counts


def test_paper_weights_do_not_depend_on_the_scale_of_the_gradients():
    grads = torch.tensor([[1.0, 0.2], [-0.5, 1.0]], dtype=torch.float64)
    losses, pref = torch.tensor([1.0, 2.0]), torch.tensor([0.4, 0.6])
    weights = [EPO(lp="paper").weights(losses, pref, s * grads @ grads.T) for s in (1e-6, 1.0, 1e6)]
    for w in weights[1:]:
        torch.testing.assert_close(w, weights[0], rtol=0, atol=1e-9)
