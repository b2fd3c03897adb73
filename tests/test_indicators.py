import numpy as np
import pytest
from pymoo.indicators.gd import GD
from pymoo.indicators.hv import HV
from pymoo.indicators.igd import IGD
from pymoo.indicators.igd_plus import IGDPlus

from mooframe.indicators import estimated_exact_seconds, gd, hypervolume, igd, igd_plus, non_dominated


def sphere_points(n: int, m: int, seed: int = 0) -> np.ndarray:
    x = np.abs(np.random.default_rng(seed).normal(size=(n, m)))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def staircase_area(points: np.ndarray, ref: np.ndarray) -> float:
    """2-D hypervolume by sweeping the points sorted by f1 (independent of moocore)."""
    area, best_f2 = 0.0, ref[1]
    for f1, f2 in sorted(map(tuple, points)):
        if f2 < best_f2:
            area += (ref[0] - f1) * (best_f2 - f2)
            best_f2 = f2
    return area


@pytest.mark.parametrize("m", [2, 3, 4, 5])
def test_exact_hypervolume_equals_pymoo(m):
    rng = np.random.default_rng(m)
    points, ref = rng.random((60, m)), np.full(m, 1.2)
    result = hypervolume(points, ref)
    assert result.method == "exact" and result.std_error == 0.0
    assert result.value == pytest.approx(HV(ref_point=ref).do(points), rel=1e-12)


def test_two_objective_hypervolume_equals_a_sweep():
    points = np.random.default_rng(1).random((40, 2))
    ref = np.array([1.1, 1.3])
    assert hypervolume(points, ref).value == pytest.approx(staircase_area(points, ref), rel=1e-12)


def test_points_beyond_the_reference_add_nothing():
    assert hypervolume([[0.5, 0.5], [2.0, 0.1]], [1.0, 1.0]).value == pytest.approx(0.25)
    assert hypervolume([[1.5, 1.5]], [1.0, 1.0]).value == 0.0


def test_approximation_is_within_one_percent_and_its_error_estimate_in_8_objectives():
    points, ref = sphere_points(100, 8), np.full(8, 1.1)
    exact = hypervolume(points, ref, method="exact").value
    approx = hypervolume(points, ref, max_exact_seconds=0.0)
    assert approx.method == "approximate" and approx.std_error > 0
    assert abs(approx.value - exact) / exact <= 0.01
    assert abs(approx.value - exact) <= 5 * approx.std_error


def test_auto_chooses_the_approximation_for_8_objectives_and_500_points():
    assert estimated_exact_seconds(500, 8) > 100 and estimated_exact_seconds(10_000, 3) == 0.0
    result = hypervolume(sphere_points(500, 8), np.full(8, 1.1))
    assert result.method == "approximate"
    assert result.std_error / result.value < 0.005


def test_distance_indicators_equal_pymoo():
    rng = np.random.default_rng(2)
    points, front = rng.random((30, 3)), sphere_points(200, 3, seed=3)
    assert igd(points, front) == pytest.approx(IGD(front).do(points), rel=1e-12)
    assert igd_plus(points, front) == pytest.approx(IGDPlus(front).do(points), rel=1e-12)
    assert gd(points, front) == pytest.approx(GD(front).do(points), rel=1e-12)
    # IGD+ counts only how far a point is worse than the front: a dominating set is at distance 0, unlike IGD.
    assert igd(front, front) == 0.0 and igd_plus(front - 0.1, front) == 0.0 < igd(front - 0.1, front)


def test_non_dominated_filter():
    points = np.array([[1.0, 2.0], [2.0, 1.0], [2.0, 2.0], [1.0, 2.0], [3.0, 0.5]])
    assert non_dominated(points).tolist() == [True, True, False, True, True]


@pytest.mark.parametrize(
    ("points", "ref", "message"),
    [
        ([[0.5, 0.5]], [1.0, 1.0, 1.0], "have 2 objectives, expected 3"),
        ([[0.5, np.nan]], [1.0, 1.0], "NaN or inf"),
        ([[0.5, 0.5]], [1.0, np.inf], "finite 1-D vector"),
        ([0.5, 0.5, 0.5], [1.0, 1.0], "2-D array"),
    ],
)
def test_bad_hypervolume_input_is_rejected_with_the_reason(points, ref, message):
    with pytest.raises(ValueError, match=message):
        hypervolume(points, ref)


def test_bad_method_and_mismatched_fronts_are_rejected():
    with pytest.raises(ValueError, match="pass 'auto', 'exact' or 'approximate'"):
        hypervolume([[0.5, 0.5]], [1.0, 1.0], method="fast")
    with pytest.raises(ValueError, match="have 2 objectives, expected 3"):
        igd([[0.5, 0.5]], sphere_points(10, 3))
