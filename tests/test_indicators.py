import re

import numpy as np
import pytest
from pymoo.indicators.gd import GD
from pymoo.indicators.hv import HV
from pymoo.indicators.igd import IGD
from pymoo.indicators.igd_plus import IGDPlus

from mooframe.indicators import as_points, estimated_exact_seconds, gd, hypervolume, igd, igd_plus, non_dominated


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


@pytest.mark.slow
def test_approximation_is_within_one_percent_and_its_error_estimate_in_8_objectives():
    points, ref = sphere_points(100, 8), np.full(8, 1.1)
    exact = hypervolume(points, ref, method="exact").value
    approx = hypervolume(points, ref, max_exact_seconds=0.0)
    assert approx.method == "approximate" and approx.std_error > 0
    assert abs(approx.value - exact) / exact <= 0.01
    assert abs(approx.value - exact) <= 5 * approx.std_error


@pytest.mark.slow
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


def test_the_approximations_standard_error_is_calibrated_over_seeds():
    """Over 40 seeds the error of the estimate, in units of its reported standard error, spreads like a t-variable
    with n_repeats - 1 = 7 degrees of freedom (sd 1.18): an error bar too small or too large by 2x fails."""
    points, ref = sphere_points(30, 5, seed=4), np.full(5, 1.1)
    exact = hypervolume(points, ref, method="exact").value
    runs = [hypervolume(points, ref, method="approximate", n_samples=2**10, seed=seed) for seed in range(40)]
    z = np.array([(r.value - exact) / r.std_error for r in runs])
    assert all(r.method == "approximate" and r.std_error > 0 for r in runs)
    assert 0.7 < z.std() < 1.8 and abs(z.mean()) < 0.6  # unbiased, and the error bar has the right size
    values, errors = np.array([r.value for r in runs]), np.array([r.std_error for r in runs])
    assert 0.6 < values.std() / errors.mean() < 1.6  # the seed-to-seed spread is what one run's error bar says
    # more samples, smaller error: the standard error falls as 1/sqrt(n_samples)
    finer = hypervolume(points, ref, method="approximate", n_samples=2**14, seed=0).std_error
    assert 2.0 < errors.mean() / finer < 8.0  # sqrt(16) = 4


def test_auto_switches_to_the_approximation_exactly_above_max_exact_seconds():
    points, ref = sphere_points(60, 5, seed=5), np.full(5, 1.1)
    dominated = points + 0.01  # dominated points are dropped before the cost is estimated
    cost = estimated_exact_seconds(60, 5)
    both = np.vstack([points, dominated])
    assert hypervolume(both, ref, max_exact_seconds=cost).method == "exact"  # at the bound: exact
    assert hypervolume(both, ref, max_exact_seconds=cost * 1.001).method == "exact"
    assert hypervolume(both, ref, max_exact_seconds=cost * 0.999).method == "approximate"
    # up to three objectives and for a single point the exact algorithm is always cheap enough
    assert hypervolume(sphere_points(500, 3), np.full(3, 1.1), max_exact_seconds=0.0).method == "exact"
    assert hypervolume(points[:1], ref, max_exact_seconds=0.0).method == "exact"
    assert hypervolume(points, ref, method="exact", max_exact_seconds=0.0).method == "exact"
    assert hypervolume(points[:3], ref, method="approximate", max_exact_seconds=1e9).method == "approximate"


def test_estimated_exact_seconds_follows_the_documented_fits():
    # 4 objectives: 6e-10 n^2; m >= 5: log t = -6.35 - 2.01 m + (1.01 m - 3.31) log n (the fit in indicators.py)
    assert estimated_exact_seconds(1000, 4) == pytest.approx(6e-4)
    assert estimated_exact_seconds(100, 6) == pytest.approx(np.exp(-6.35 - 12.06 + 2.75 * np.log(100)))
    assert estimated_exact_seconds(200, 8) == pytest.approx(np.exp(-6.35 - 16.08 + 4.77 * np.log(200)))
    assert estimated_exact_seconds(1, 8) == 0.0 and estimated_exact_seconds(2, 8) > 0.0
    assert estimated_exact_seconds(10**6, 3) == 0.0 and estimated_exact_seconds(2, 4) > 0.0


def test_sample_and_repeat_counts_are_checked_from_both_sides():
    points, ref = [[0.5, 0.5, 0.5, 0.5]], [1.0] * 4
    assert hypervolume(points, ref, method="approximate", n_samples=1, n_repeats=2).method == "approximate"
    for kwargs in ({"n_samples": 0}, {"n_repeats": 1}):
        with pytest.raises(ValueError, match="need n_samples >= 1 and n_repeats >= 2"):
            hypervolume(points, ref, method="approximate", **kwargs)


def test_one_point_as_a_vector_and_empty_inputs():
    assert hypervolume([0.5, 0.25], [1.0, 1.0]).value == pytest.approx(0.375)  # one point given as a 1-D vector
    empty = hypervolume(np.zeros((0, 2)), [1.0, 1.0])
    assert (empty.value, empty.method, empty.std_error) == (0.0, "exact", 0.0)
    assert float(hypervolume([[0.0, 0.0]], [2.0, 3.0])) == 6.0
    assert non_dominated(np.zeros((0, 3))).tolist() == [] and non_dominated(np.zeros((0, 3))).dtype == bool
    assert non_dominated([[1.0, 2.0]]).tolist() == [True]  # one point: non-dominated
    with pytest.raises(ValueError, match="at least one point and one true front point"):
        igd(np.zeros((0, 2)), [[0.0, 1.0]])
    with pytest.raises(ValueError, match="at least one point and one true front point"):
        gd([[0.0, 1.0]], np.zeros((0, 2)))


def test_the_defaults_one_second_eight_repeats_seed_zero():
    import moocore

    points = sphere_points(120, 8, seed=6)  # estimated exact cost 1.50 s: above the default budget of 1 s
    assert 1.0 < estimated_exact_seconds(120, 8) < 2.0
    assert hypervolume(points, np.full(8, 1.1), n_samples=2**8).method == "approximate"
    # the estimate is the mean of 8 moocore runs drawn from default_rng(0), its error their standard error
    small, ref = sphere_points(20, 5, seed=7), np.full(5, 1.1)
    rng = np.random.default_rng(0)
    runs = [moocore.hv_approx(small, ref=ref, nsamples=2**10, seed=rng, method="DZ2019-MC") for _ in range(8)]
    result = hypervolume(small, ref, method="approximate", n_samples=2**10)
    assert result.value == pytest.approx(np.mean(runs), rel=1e-12)
    assert result.std_error == pytest.approx(np.std(runs, ddof=1) / np.sqrt(8), rel=1e-9)


def test_distance_indicator_errors_name_the_true_front():
    with pytest.raises(ValueError, match="^true front points contain NaN or inf"):
        igd([[0.0, 1.0]], [[np.nan, 1.0]])
    with pytest.raises(ValueError, match="^distance indicators need at least one point and one true front point$"):
        igd_plus(np.zeros((0, 2)), [[0.0, 1.0]])


def test_as_points_reshapes_only_a_vector_of_one_point_and_names_what_is_wrong():
    one = as_points(np.array([1, 2]), n_objectives=2)  # integers in
    assert one.dtype == np.float64 and one.tolist() == [[1.0, 2.0]]
    assert as_points(np.array([[1, 2]])).dtype == np.float64
    assert as_points([], n_objectives=3).shape == (0, 3)
    assert as_points(np.zeros((0, 2))).shape == (0, 2)
    for vector, n in (([1.0, 2.0, 3.0, 4.0], 2), ([1.0, 2.0], None), ([1.0], 2)):  # not one point of n values
        shape = re.escape(str((len(vector),)))
        with pytest.raises(
            ValueError, match=rf"^points must be a 2-D array of shape \(n_points, n_objectives\), got shape {shape}$"
        ):
            as_points(vector, n_objectives=n)
    with pytest.raises(ValueError, match=r"^front must be a 2-D array .* got shape \(2, 1, 1\)$"):
        as_points(np.zeros((2, 1, 1)), what="front")
    with pytest.raises(ValueError, match="^points have 2 objectives, expected 3$"):
        as_points([[1.0, 2.0]], n_objectives=3)
    with pytest.raises(ValueError, match="^points contain NaN or inf; drop or repair those rows first$"):
        as_points([[1.0, np.inf]])
