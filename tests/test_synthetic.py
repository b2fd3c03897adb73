import numpy as np
import pytest
import torch
from pymoo.problems import get_problem
from pymoo.util.ref_dirs import get_reference_directions

from mooframe.indicators import non_dominated
from mooframe.problems.synthetic import DTLZ2, VLMOP2, ZDT1, ZDT2, ZDT3


@pytest.mark.parametrize(
    ("problem", "pymoo_name", "kwargs"),
    [
        (ZDT1(), "zdt1", {"n_var": 30}),
        (ZDT2(n_var=7), "zdt2", {"n_var": 7}),
        (ZDT3(), "zdt3", {"n_var": 30}),
        (DTLZ2(), "dtlz2", {"n_var": 12, "n_obj": 3}),
        (DTLZ2(n_obj=4, k=5), "dtlz2", {"n_var": 8, "n_obj": 4}),
    ],
)
def test_torch_problems_equal_pymoo_on_random_inputs(problem, pymoo_name, kwargs):
    reference = get_problem(pymoo_name, **kwargs)
    lower, upper = (b.numpy().astype(np.float64) for b in problem.bounds)
    assert np.array_equal(lower, reference.xl) and np.array_equal(upper, reference.xu)
    x = np.random.default_rng(0).uniform(lower, upper, size=(200, problem.n_var))
    x[0] = lower  # corners, where sqrt and sin are at the edge of their domain
    x[1] = upper
    ours = problem.objectives(torch.as_tensor(x, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ours, reference.evaluate(x), rtol=0, atol=1e-10)


def vlmop2_numpy(x: np.ndarray) -> np.ndarray:
    """Van Veldhuizen & Lamont (1999): f_{1,2}(x) = 1 - exp(-sum_i (x_i -+ 1/sqrt(n))^2)."""
    n = x.shape[1]
    return np.stack(
        [
            1 - np.exp(-np.sum((x - 1 / np.sqrt(n)) ** 2, axis=1)),
            1 - np.exp(-np.sum((x + 1 / np.sqrt(n)) ** 2, axis=1)),
        ],
        axis=1,
    )


@pytest.mark.parametrize("n_var", [1, 2, 5])
def test_vlmop2_equals_an_independent_formula(n_var):
    problem = VLMOP2(n_var=n_var)
    x = np.random.default_rng(n_var).uniform(-2, 2, size=(200, n_var))
    ours = problem.objectives(torch.as_tensor(x, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ours, vlmop2_numpy(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_var", [2, 5])
def test_vlmop2_true_front_is_non_dominated_and_attained_on_the_diagonal(n_var):
    problem = VLMOP2(n_var=n_var)
    front = problem.true_front(200)
    assert non_dominated(front).all()
    t = np.linspace(-1 / np.sqrt(n_var), 1 / np.sqrt(n_var), 200)
    np.testing.assert_allclose(front, vlmop2_numpy(np.repeat(t[:, None], n_var, axis=1)), atol=1e-12)
    # no random point of the box dominates a front point
    samples = vlmop2_numpy(np.random.default_rng(0).uniform(-2, 2, size=(5000, n_var)))
    dominated = [(samples <= f).all(axis=1) & (samples < f).any(axis=1) for f in front]
    assert not np.any(dominated)


@pytest.mark.parametrize("problem", [ZDT1(), ZDT2(), ZDT3(n_var=10)])
def test_zdt_true_fronts_are_non_dominated_and_attained_at_x_rest_zero(problem):
    front = problem.true_front(100)
    assert front.shape[1] == 2 and len(front) >= 97 and non_dominated(front).all()
    x = torch.zeros(len(front), problem.n_var, dtype=torch.float64)
    x[:, 0] = torch.as_tensor(front[:, 0])
    np.testing.assert_allclose(problem.objectives(x).numpy(), front, atol=1e-10)


def test_dtlz2_true_front_is_the_unit_sphere_attained_at_tail_one_half():
    problem = DTLZ2()
    front = problem.true_front(100)
    assert front.shape == (105, 3) and non_dominated(front).all()  # the smallest Das-Dennis grid >= 100 points
    np.testing.assert_allclose(np.linalg.norm(front, axis=1), 1.0, atol=1e-12)
    pymoo_front = get_problem("dtlz2").pareto_front(get_reference_directions("uniform", 3, n_partitions=13))
    np.testing.assert_allclose(front, pymoo_front, atol=1e-12)
    x = torch.rand(50, problem.n_var, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[:, problem.n_obj - 1 :] = 0.5
    np.testing.assert_allclose(np.linalg.norm(problem.objectives(x).numpy(), axis=1), 1.0, atol=1e-12)
