"""Preferences: both sides of every bound of `check_preference`, the sampler's distribution, the grids' points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mooframe.preferences import (
    check_preference,
    equal_preference,
    sample_preferences,
    uniform_grid,
    unit_preferences,
)


@pytest.mark.parametrize(
    "pref",
    [[0.3, 0.7], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5 + 0.9e-6], [0.5, 0.5 - 0.9e-6], np.array([0.25, 0.75])],
)
def test_preferences_on_the_simplex_within_the_tolerance_are_accepted(pref):
    checked = check_preference(pref, 2)
    assert checked.dtype == torch.get_default_dtype() and checked.shape == (2,)
    np.testing.assert_allclose(checked.numpy(), np.asarray(pref, dtype=np.float32))


@pytest.mark.parametrize(
    "pref, message",
    [
        ([0.5, 0.5 + 1.1e-6], "sums to 1.0000011, not 1"),  # the sum tolerance is 1e-6, from above ...
        ([0.5, 0.5 - 1.1e-6], "sums to 0.9999989, not 1"),  # ... and from below
        ([1.0 + 1e-9, -1e-9], "negative entry"),  # no tolerance on the sign, even where the sum is 1
        ([np.inf, 0.0], "NaN or inf"),
        ([[0.5], [0.5], [0.0]], "has 3 entries but the problem has 2"),
    ],
)
def test_preferences_just_outside_a_bound_are_rejected(pref, message):
    with pytest.raises(ValueError, match=message):
        check_preference(pref, 2)


def test_the_sum_is_checked_in_float64_whatever_the_input_dtype():
    # float16 rounds 0.3 and 0.7 up: the exact values sum to 1.00024, a float16 sum would round that to 1
    with pytest.raises(ValueError, match="sums to 1.00024"):
        check_preference(torch.tensor([0.3, 0.7], dtype=torch.float16), 2)
    exact = check_preference(torch.tensor([0.25, 0.75], dtype=torch.bfloat16), 2)
    assert exact.dtype == torch.float32 and exact.tolist() == [0.25, 0.75]
    assert check_preference(torch.tensor([[1, 0]]), 2).tolist() == [1.0, 0.0]  # integers and a (1, T) row


def test_the_result_follows_the_default_dtype():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        checked = check_preference([1 / 3, 2 / 3], 2)
    finally:
        torch.set_default_dtype(previous)
    assert checked.dtype == torch.float64 and checked.tolist() == [1 / 3, 2 / 3]


def test_samples_are_numpys_dirichlet_draws_with_the_given_concentration():
    draws = sample_preferences(3, np.random.default_rng(5), n=4)  # alpha = 1 by default: uniform on the simplex
    np.testing.assert_allclose(draws.numpy(), np.random.default_rng(5).dirichlet(np.ones(3), size=4), rtol=1e-6)
    one = sample_preferences(2, np.random.default_rng(6), alpha=0.3)
    assert one.shape == (2,) and one.dtype == torch.get_default_dtype()
    np.testing.assert_allclose(one.numpy(), np.random.default_rng(6).dirichlet([0.3, 0.3]), rtol=1e-6)
    for alpha in (0.0, -1.0):
        with pytest.raises(ValueError, match="Dirichlet alpha must be > 0"):
            sample_preferences(2, np.random.default_rng(0), alpha=alpha)


def test_grids_hold_the_simplex_lattice_points():
    np.testing.assert_allclose(sorted(map(tuple, uniform_grid(2, 2))), [(0.0, 1.0), (1.0, 0.0)])  # n = 2 is allowed
    np.testing.assert_allclose(sorted(uniform_grid(2, 5)[:, 0]), [0.0, 0.25, 0.5, 0.75, 1.0])
    lattice = sorted(tuple(round(v, 9) for v in p) for p in uniform_grid(3, 3))
    assert lattice == sorted({(i / 2, j / 2, round(1 - i / 2 - j / 2, 9)) for i in range(3) for j in range(3 - i)})
    assert uniform_grid(1, 7).tolist() == [[1.0]]
    with pytest.raises(ValueError, match="at least 2 points per edge, got n=1"):
        uniform_grid(2, 1)


def test_unit_and_equal_preferences():
    assert unit_preferences(3).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert equal_preference(4).tolist() == [0.25] * 4
