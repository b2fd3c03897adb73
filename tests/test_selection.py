"""Choosing a trade-off: rules on hand-built fronts, refinement on a problem with a known optimum, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mooframe import ParetoSetModel, ParetoSetResult, Problem, solve
from mooframe.cli import main
from mooframe.front import Front
from mooframe.selection import (
    Constraint,
    NoFeasiblePoint,
    Rule,
    concat_fronts,
    ideal_distances,
    local_refinement,
    parse_rule,
    select,
)
from mooframe.solvers.ls import LinearScalarization


@pytest.fixture
def front() -> Front:
    """Five points of two tasks a, b; objectives are the errors 1 - accuracy. Point 4 is dominated by point 2."""
    accuracy = np.array([[0.95, 0.50], [0.90, 0.80], [0.85, 0.86], [0.60, 0.90], [0.80, 0.84]])
    return Front(
        prefs=np.array([[1.0, 0.0], [0.75, 0.25], [0.5, 0.5], [0.25, 0.75], [0.0, 1.0]]),
        objectives=1.0 - accuracy,
        objective_names=["a", "b"],
        metrics={"accuracy": accuracy, "loss": np.array([[0.2, 1.5], [0.3, 0.6], [0.4, 0.5], [0.9, 0.4], [0.5, 0.5]])},
    )


def test_constrained_rule_returns_the_best_feasible_point_and_ranks_the_rest(front):
    selection = select(front, "max accuracy[a] subject to accuracy[b] >= 0.8")
    assert selection.index == 1  # points 1-4 meet the bound; point 1 has the highest accuracy on a
    np.testing.assert_array_equal(selection.ranking, [1, 2, 4, 3])
    assert str(selection.rule) == "max accuracy[a] subject to accuracy[b] >= 0.8"
    np.testing.assert_array_equal(selection.pref, [0.75, 0.25])
    assert selection.metrics["accuracy"].tolist() == [0.90, 0.80]
    two_bounds = select(front, "min loss[b] subject to accuracy[a] >= 0.8 and b <= 0.17")
    assert two_bounds.index == 2  # feasible: 2 and 4, both loss 0.5; 4 has the larger total error
    np.testing.assert_array_equal(two_bounds.runners_up(), [4])
    assert "chosen" in two_bounds.summary() and "0.5,0.5" in two_bounds.summary()


def test_an_unmeetable_constraint_says_so_and_shows_the_closest_points(front):
    with pytest.raises(NoFeasiblePoint, match=r"no evaluated preference meets accuracy\[b\] >= 0.95") as error:
        select(front, "max accuracy[a] subject to accuracy[b] >= 0.95")
    np.testing.assert_array_equal(error.value.closest, [3, 2, 4])  # highest accuracy on b first
    assert "0.25,0.75" in str(error.value) and "closest" in str(error.value)


def test_knee_and_ideal_on_a_hand_built_front():
    # Normalized sums: 1, 0.4, 0.7, 1 and the dominated (0.6, 0.9) must not set the nadir.
    objectives = np.array([[0.0, 1.0], [0.1, 0.3], [0.5, 0.2], [1.0, 0.0], [0.6, 0.9]])
    front = Front(prefs=np.linspace([1, 0], [0, 1], 5), objectives=objectives, objective_names=["a", "b"])
    assert select(front, "knee").index == 1
    assert select(front, "ideal").index == 1  # distances sqrt(0.1^2+0.3^2) < sqrt(0.5^2+0.2^2) < 1
    assert select(front, "ideal 0.5,0.1").index == 2
    assert select(front, "knee subject to a >= 0.4").index == 2  # among 2-4; 2 and 3 tie, 2 has less total error


def test_pref_rule_picks_the_evaluated_point(front):
    assert select(front, "pref 0.25,0.75").index == 3
    with pytest.raises(ValueError, match="not among the evaluated points"):
        select(front, "pref 0.4,0.6")


@pytest.mark.parametrize(
    "rule, message",
    [
        ("best a", "must start with one of"),
        ("max", "takes one quantity"),
        ("max accuracy[c]", "unknown task 'c'"),
        ("max f1[a]", "unknown metric 'f1'"),
        ("min a subject to accuracy[b] = 0.8", "must read 'QUANTITY >= NUMBER'"),
        ("min a subject to accuracy[b] >= high", "is not a number"),
        ("ideal 0.1", "has 1 entries; pass 2"),
        ("pref 0.3,x", "not a comma-separated list"),
    ],
)
def test_bad_rules_say_what_to_write(front, rule, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        select(front, rule)


def test_local_refinement_subdivides_the_segments_to_the_grid_neighbours():
    prefs = np.linspace([0.0, 1.0], [1.0, 0.0], 11)
    front = Front(prefs=prefs, objectives=prefs.copy(), objective_names=["a", "b"])
    points = local_refinement(front, 3, 4)
    np.testing.assert_allclose(np.sort(points[:, 0]), [0.225, 0.25, 0.275, 0.325, 0.35, 0.375])
    np.testing.assert_allclose(points.sum(1), 1.0)
    grid = np.array([[i, j, 10 - i - j] for i in range(11) for j in range(11 - i)]) / 10
    front3 = Front(prefs=grid, objectives=grid.copy(), objective_names=["a", "b", "c"])
    center = np.flatnonzero(np.all(np.isclose(grid, [0.3, 0.3, 0.4]), axis=1))[0]
    points = local_refinement(front3, center, 2)
    assert points.shape == (6, 3)  # the midpoints to the 6 grid neighbours
    np.testing.assert_allclose(np.abs(points - grid[center]).max(1), 0.05)


class _Pref(ParetoSetModel):
    """The solution is the preference itself."""

    def forward(self, pref: torch.Tensor) -> torch.Tensor:
        return pref


class _Target(Problem):
    """f(x) = ((x_1 - 0.372)^2, (x_2 - 0.628)^2): on the simplex both are smallest at x_1 = 0.372."""

    n_objectives = 2

    def _losses(self, solution: torch.Tensor, batch: object = None) -> torch.Tensor:
        return (solution - torch.tensor([0.372, 0.628])) ** 2


def test_refinement_moves_the_choice_to_a_finer_grid_point():
    problem = _Target()
    result = ParetoSetResult(problem, _Pref(problem), LinearScalarization())
    coarse = result.select("min f1", n=11)
    np.testing.assert_allclose(coarse.pref, [0.4, 0.6])
    fine = result.select("min f1", n=11, refine=5)  # spacing 0.02 around 0.4: 0.38 is nearest to 0.372
    np.testing.assert_allclose(fine.pref, [0.38, 0.62])
    assert len(fine.front.prefs) == 11 + 8
    assert fine.objectives[0] == pytest.approx((0.38 - 0.372) ** 2, rel=1e-3)  # float32 model
    explicit = result.select("pref 0.372,0.628")
    assert explicit.objectives == pytest.approx([0.0, 0.0], abs=1e-12)


def test_cli_select_prints_the_choice_and_reports_unmeetable_rules(tmp_path, capsys):
    run = solve("zdt1", steps=0, progress=False).save(tmp_path / "run")
    assert main(["select", str(run), "min f1", "--n", "5", "--runners-up", "2"]) == 0
    out = capsys.readouterr().out
    assert "rule: min f1" in out and out.count("runner-up") == 2
    assert main(["select", str(run), "min f1 subject to f2 <= -1", "--n", "5"]) == 2
    assert "no evaluated preference meets f2 <= -1" in capsys.readouterr().err


def test_rules_print_back_as_written_and_read_keywords_in_any_case():
    rule = parse_rule("IDEAL 0.05,0.1  SUBJECT TO a <= 0.5 AND accuracy[b] >= 0.8")
    assert rule == Rule("ideal", point=(0.05, 0.1), constraints=(Constraint("a", "<=", 0.5),
                                                                 Constraint("accuracy[b]", ">=", 0.8)))  # fmt: skip
    assert str(rule) == "ideal 0.05,0.1 subject to a <= 0.5 and accuracy[b] >= 0.8"
    assert str(parse_rule("Knee")) == "knee" and str(parse_rule("min  loss[a]")) == "min loss[a]"


def test_min_and_max_rank_every_feasible_point(front):
    np.testing.assert_array_equal(select(front, "min a").ranking, [0, 1, 2, 4, 3])  # errors 0.05 < 0.1 < ...
    np.testing.assert_array_equal(select(front, "max a").ranking, [3, 4, 2, 1, 0])
    np.testing.assert_array_equal(select(front, "max loss[a]").ranking, [3, 4, 2, 1, 0])
    # loss[b] ties at 0.5 between points 2 and 4: the smaller total error (2: 0.29, 4: 0.36) ranks first
    np.testing.assert_array_equal(select(front, "min loss[b]").ranking, [3, 2, 4, 1, 0])
    np.testing.assert_array_equal(select(front, "min b subject to b <= 0.14").ranking, [3, 2])  # the bound is met


def test_the_closest_points_weigh_each_violation_by_its_quantitys_range(front):
    # violations of accuracy[a] >= 0.97 over its range 0.35 plus those of loss[b] <= 0.3 over 1.1:
    # 1.148, 0.473, 0.525, 1.148, 0.668 (unscaled sums would put point 2 first)
    with pytest.raises(NoFeasiblePoint) as error:
        select(front, "knee subject to accuracy[a] >= 0.97 and loss[b] <= 0.3")
    np.testing.assert_array_equal(error.value.closest, [1, 2, 4])
    assert "accuracy[a] >= 0.97 and loss[b] <= 0.3 (5 points evaluated)" in str(error.value)


def test_the_summary_names_the_rule_the_feasible_count_and_the_runners_up(front):
    selection = select(front, "max accuracy[a] subject to accuracy[b] >= 0.8")
    lines = selection.summary(k=2).splitlines()
    assert lines[0] == "rule: max accuracy[a] subject to accuracy[b] >= 0.8  (4 of 5 evaluated points feasible)"
    assert lines[1].split() == ["pref", "a", "b", "accuracy[a]", "accuracy[b]", "loss[a]", "loss[b]"]
    assert lines[3].split() == ["chosen", "0.75,0.25", "0.1", "0.2", "0.9", "0.8", "0.3", "0.6"]
    assert [line.split()[0] for line in lines[4:]] == ["runner-up", "runner-up"]
    np.testing.assert_array_equal(selection.runners_up(k=2), [2, 4])
    assert selection.objectives.tolist() == pytest.approx([0.1, 0.2])


@pytest.mark.parametrize(
    "rule, message",
    [
        ("", "must start with one of pref, min, max, knee, ideal"),
        ("min a b", "'min' takes one quantity"),
        ("knee 0.5", "'knee' takes no argument"),
        ("pref", "'pref' takes the preference and no constraint"),
        ("pref 0.5,0.5 subject to a <= 0.2", "'pref' takes the preference and no constraint"),
        ("min a subject to b <= 0.1 and", "must read 'QUANTITY >= NUMBER'"),
    ],
)
def test_more_bad_rules_say_what_to_write(front, rule, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        select(front, rule)


def test_a_front_without_metrics_names_the_fix_and_refinement_needs_two_points():
    bare = Front(prefs=np.array([[1.0, 0.0]]), objectives=np.array([[0.1, 0.9]]), objective_names=["a", "b"])
    with pytest.raises(ValueError, match=r"metrics of this front: none \(use a task name for its objective\)"):
        select(bare, "max accuracy[a]")
    with pytest.raises(ValueError, match="at least two evaluated preferences"):
        local_refinement(bare, 0, 2)
    with pytest.raises(ValueError, match="k >= 2 subdivisions, got 1"):
        local_refinement(bare, 0, 1)


def test_joined_fronts_keep_both_fronts_points_in_order(front):
    joined = concat_fronts(front, select(front, "knee").front)
    assert len(joined.prefs) == 10 and joined.objective_names == ["a", "b"]
    np.testing.assert_array_equal(joined.metrics["loss"][5:], front.metrics["loss"])
    np.testing.assert_array_equal(joined.objectives[:5], front.objectives)
    other = Front(prefs=front.prefs, objectives=front.objectives, objective_names=["a", "c"])
    with pytest.raises(ValueError, match="fronts of different tasks or metrics cannot be joined"):
        concat_fronts(front, other)
    with pytest.raises(ValueError, match="fronts of different tasks or metrics cannot be joined"):
        concat_fronts(front, Front(prefs=front.prefs, objectives=front.objectives, objective_names=["a", "b"]))


def test_the_pref_rule_matches_within_1e_6_keeps_its_rule_and_flat_objectives_keep_their_scale(front):
    chosen = select(front, "pref 0.2500005,0.7499995")  # 5e-7 off the evaluated (0.25, 0.75)
    assert chosen.index == 3 and chosen.rule == parse_rule("pref 0.2500005,0.7499995")
    with pytest.raises(ValueError, match="not among the evaluated points"):
        select(front, "pref 0.250002,0.749998")
    # one non-dominated point: both objectives are flat there and keep unit scale, so distances are objective units
    assert ideal_distances(np.array([[1.0, 0.5], [2.0, 0.5], [1.0, 1.25]])).tolist() == [0.0, 1.0, 0.75]
