"""EPO(lp="paper"): the published EPOSearch LPs, checked against scipy's linprog written out from the paper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from mooframe.solvers.epo import EPO


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
