"""EPO(lp="paper"): the published EPOSearch LPs, checked against scipy's linprog written out from the paper."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from mooframe.solvers.epo import EPO, _paper_adjustment, _paper_balance_lp
from mooframe.solvers.lp_backends import SimplexLPs


def published_lp(gram: np.ndarray, losses: np.ndarray, r: np.ndarray, eps: float = 1e-4):
    """(cost, A_ub, b_ub) of EPOSearch's LP for linprog (minimize -cost; rows as <=), from Mahapatra & Rajan."""
    m = len(losses)
    rl = r * losses
    l_hat = rl / rl.sum()
    mu = float(np.sum(l_hat * np.log(m * l_hat)))
    a = r * (np.log(m * l_hat) - mu)
    ca = gram @ a
    if mu > eps:  # balance: max alpha^T C a
        cost = ca
        rows, rhs = [], []
        for j in range(m):
            if rl[j] == rl.max() and (ca > 0).any():
                rows.append(gram[j]), rhs.append(0.0)
            elif ca[j] <= 0 or not (ca > 0).any():
                rows.append(gram[j]), rhs.append(ca[j] if (ca > 0).any() else 0.0)
    else:  # descent: max 1^T C alpha s.t. alpha^T C a >= min(max C a, 0), C alpha >= 0
        cost = gram.sum(0)
        rows = [ca, *gram]
        rhs = [min(ca.max(), 0.0), *np.zeros(m)]
    return cost, -np.array(rows), -np.array(rhs)


def solve_published(gram, losses, r):
    cost, a_ub, b_ub = published_lp(gram, losses, r)
    m = len(r)
    result = linprog(-cost, A_ub=a_ub, b_ub=b_ub, A_eq=np.ones((1, m)), b_eq=[1.0], bounds=[(0, None)] * m)
    return cost, a_ub, b_ub, result


@pytest.mark.parametrize("backend", ["simplex", "highs"])
def test_paper_lp_reaches_the_published_lps_optimum_on_random_instances(backend):
    rng = np.random.default_rng(0)
    checked = {"balance": 0, "descent": 0, "infeasible": 0}
    for trial in range(120):
        m = int(rng.integers(2, 6))
        grads = rng.normal(size=(m, 12))
        gram = grads @ grads.T
        r = rng.dirichlet(np.ones(m))
        on_ray = trial % 3 == 0  # r_t l_t equal: mu = 0, the descent LP
        losses = (1.0 / r) * rng.uniform(0.5, 2.0) if on_ray else rng.uniform(0.1, 3.0, size=m)
        solver = EPO(lp="paper", backend=backend)
        solver.reset(m)
        weights = solver.weights(torch.tensor(losses), torch.tensor(r), gram=torch.tensor(gram)).numpy()
        cost, a_ub, b_ub, result = solve_published(gram, losses, r)
        if result.status == 2:  # infeasible: the published code falls back to r / sum(r), times T
            np.testing.assert_allclose(weights, m * r / r.sum())
            checked["infeasible"] += 1
            continue
        assert result.status == 0
        alpha = weights / m  # the PWE-MoE code multiplies alpha by T
        assert alpha.min() >= -1e-9 and alpha.sum() == pytest.approx(1.0)
        assert (a_ub @ alpha <= b_ub + 1e-7 * np.abs(gram).max()).all()
        assert cost @ alpha == pytest.approx(-result.fun, abs=1e-7 * np.abs(gram).max())
        checked["descent" if on_ray else "balance"] += 1
    assert min(checked["balance"], checked["descent"]) > 30


def test_paper_lp_differs_from_the_default_and_falls_back_to_r_on_the_boundary():
    gram = torch.tensor([[1.0, -0.5], [-0.5, 1.0]], dtype=torch.float64)
    losses = torch.tensor([0.3, 1.2], dtype=torch.float64)
    paper, default = EPO(lp="paper"), EPO()
    for solver in (paper, default):
        solver.reset(2)
    # at a vertex the published adjustment is NaN (0 * log 0): the LP throws there and the code uses r
    vertex = torch.tensor([1.0, 0.0], dtype=torch.float64)
    np.testing.assert_allclose(paper.weights(losses, vertex, gram).numpy(), [2.0, 0.0])
    assert paper.stats()["ls_fallbacks"] == 1
    r = torch.tensor([0.9, 0.1], dtype=torch.float64)
    assert paper.weights(losses, r, gram).sum().item() == pytest.approx(2.0)
    assert default.weights(losses, r, gram).sum().item() == pytest.approx(1.0)


def test_unknown_lp_variant_is_refused():
    with pytest.raises(ValueError, match="'mooframe'.*'paper'"):
        EPO(lp="published")


def test_paper_fallbacks_and_modes_are_counted_and_the_weights_are_t_alpha_on_the_simplex(monkeypatch):
    gram = torch.tensor([[1.0, 0.2], [0.2, 2.0]])
    solver = EPO(lp="paper")
    solver.reset(2)
    vertex = torch.tensor([0.0, 1.0 + 9e-7])  # on the simplex within its tolerance (|sum - 1| <= 1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # log(0) and 0 * log(0) at r_t = 0 are expected there: silenced
        for _ in range(2):  # a is NaN at r_1 = 0: alpha = r / sum(r), exactly on the simplex, times T
            assert solver.weights(torch.tensor([1.0, 3.0]), vertex, gram).tolist() == pytest.approx([0, 2], abs=1e-12)
    for losses in ([1.0, 3.0], [3.0, 1.0]):  # off the ray: balance LPs
        solver.weights(torch.tensor(losses), torch.tensor([0.5, 0.5]), gram)
    for _ in range(3):  # on the ray: descent LPs
        solver.weights(torch.tensor([2.0, 2.0]), torch.tensor([0.5, 0.5]), gram)
    assert {k: solver.stats()[k] for k in ("ls_fallbacks", "balance", "descent")} == {
        "ls_fallbacks": 2, "balance": 2, "descent": 3
    }  # fmt: skip
    monkeypatch.setattr(SimplexLPs, "solve", lambda self, kind, lp: None)  # every LP fails: r / sum(r), times T
    pref = torch.tensor([0.25, 0.75 + 9e-7])
    w = solver.weights(torch.tensor([1.0, 3.0]), pref, gram)
    np.testing.assert_allclose(w.numpy(), 2 * pref.double().numpy() / pref.double().sum().item(), rtol=1e-12)
    assert w.sum().item() == pytest.approx(2.0, abs=1e-12) and solver.stats()["ls_fallbacks"] == 3


@pytest.mark.parametrize("lp", ["paper", "mooframe"])
def test_the_mode_switches_to_balance_strictly_above_eps(lp):
    # r = (1/2, 1/2), l = (1, 3): l_hat = (1/4, 3/4), mu = 1/4 log(1/2) + 3/4 log(3/2), exactly as computed
    mu = 0.25 * np.log(0.5) + 0.75 * np.log(1.5)
    for eps, mode in ((mu, "descent"), (np.nextafter(mu, 0), "balance")):
        solver = EPO(eps=float(eps), lp=lp)
        solver.reset(2)
        solver.weights(torch.tensor([1.0, 3.0], dtype=torch.float64), torch.tensor([0.5, 0.5]), torch.eye(2))
        assert solver.stats()[mode] == 1, (eps, mode)


def test_the_paper_adjustment_keeps_only_the_l_hat_above_machine_epsilon():
    eps = np.finfo(np.float64).eps
    mu, a = _paper_adjustment(np.array([0.5, 0.5]), np.array([2 * eps, 2 * (1 - eps)]))  # l_hat = (eps, 1 - eps)
    assert mu == (1 - eps) * np.log(2 * (1 - eps))  # the l_hat = eps entry is left out
    np.testing.assert_allclose(a, 0.5 * (np.log(2 * np.array([eps, 1 - eps])) - mu), rtol=1e-15)


def test_the_paper_balance_lp_treats_a_zero_c_a_entry_as_no_ascent():
    # (C a) = (-1, 0): nothing ascends, so every row is C alpha >= 0 (a zero entry is not an ascent)
    lp = _paper_balance_lp(np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([-1.0, 1.0]), np.array([1.0, 2.0]))
    assert lp.cost.tolist() == [-1.0, 0.0] and lp.rows.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert lp.lower.tolist() == [0.0, 0.0]


def test_epo_stats_report_the_backends_inaccurate_count_and_reset_checks_the_count(monkeypatch):
    assert EPO().stats()["inaccurate"] == 0  # before any LP
    monkeypatch.setattr(SimplexLPs, "inaccurate", 2)
    solver = EPO()
    solver.reset(2)
    solver.weights(torch.tensor([1.0, 3.0]), torch.tensor([0.5, 0.5]), torch.eye(2))
    assert solver.stats()["inaccurate"] == 2
    with pytest.raises(ValueError, match="reset for 2 objectives but got 3 losses"):
        solver.weights(torch.ones(3), torch.full((3,), 1 / 3), torch.eye(3))
