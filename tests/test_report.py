import csv
import dataclasses
import json

import numpy as np
import pytest

from mooframe.cli import main
from mooframe.front import Front
from mooframe.indicators import HypervolumeResult
from mooframe.preferences import uniform_grid
from mooframe.report import (
    ERROR_NOTE,
    compare_fronts,
    evaluation_preferences,
    plot_fronts,
    simplex_triangles,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def staircase_area(points, ref) -> float:
    """2-D hypervolume by a sweep over the points sorted by f1, written here independently of mooframe."""
    area, best_f2 = 0.0, ref[1]
    for f1, f2 in sorted(map(tuple, np.asarray(points, dtype=float))):
        if f1 < ref[0] and f2 < best_f2:
            area += (ref[0] - f1) * (best_f2 - f2)
            best_f2 = f2
    return area


def mean_distance_to_nearest(queries, points, plus: bool = False) -> float:
    """IGD (plus=False) or IGD+ (d+(z, a) = ||max(a - z, 0)||) of `points` against the reference `queries`."""
    diff = np.asarray(points)[None, :, :] - np.asarray(queries)[:, None, :]
    diff = np.maximum(diff, 0.0) if plus else diff
    return float(np.sqrt((diff**2).sum(-1)).min(1).mean())


def two_objective_front(points, metrics=None) -> Front:
    points = np.asarray(points, dtype=float)
    prefs = np.linspace([1.0, 0.0], [0.0, 1.0], len(points))
    return Front(prefs, points, ["f1", "f2"], metrics or {})


def test_comparison_uses_one_reference_point_and_reads_values_at_key_preferences():
    fronts = {
        "good": two_objective_front([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]),
        "worse": two_objective_front([[0.2, 1.0], [0.5, 0.6], [0.5, 0.6]]),
    }
    comparison = compare_fronts(fronts, extras={"good": {"trainable parameters": 264}})
    np.testing.assert_allclose(comparison.ref_point, [1.1, 1.1])  # nadir (1, 1) + 10% of the range (1, 1)
    good, worse = comparison.methods
    # staircase areas at (1.1, 1.1): 1.1*0.1 + 0.6*0.5 + 0.1*0.5 and 0.9*0.1 + 0.6*0.4
    assert good.hypervolume.value == pytest.approx(0.46) and worse.hypervolume.value == pytest.approx(0.33)
    assert (good.n_non_dominated, worse.n_non_dominated, worse.n_points) == (3, 2, 3)
    np.testing.assert_array_equal(good.at_preferences["e1"]["objectives"], [0.0, 1.0])
    np.testing.assert_array_equal(good.at_preferences["equal"]["objectives"], [0.5, 0.5])
    assert good.igd is None and ERROR_NOTE not in comparison.notes
    text = comparison.text()
    assert "trainable parameters" in text and "264" in text and "(1.1, 1.1)" in text


def test_true_front_gives_igd_and_the_hv_ratio_and_accuracy_marks_errors():
    truth = np.stack([np.linspace(0, 1, 50), 1 - np.linspace(0, 1, 50)], axis=1)
    points = np.array([[0.1, 0.95], [0.6, 0.5]])
    front = two_objective_front(points, {"accuracy": 1 - points})
    comparison = compare_fronts({"m": front}, true_front=truth, ref=[2.0, 2.0])
    (m,) = comparison.methods
    assert comparison.ref_rule == "given"
    assert m.igd == pytest.approx(mean_distance_to_nearest(truth, points), rel=1e-12)
    assert m.igd_plus == pytest.approx(mean_distance_to_nearest(truth, points, plus=True), rel=1e-12)
    # (2 - 0.1)(2 - 0.95) + (2 - 0.6)(0.95 - 0.5) = 2.625, over the true staircase's area
    assert m.hypervolume.value == pytest.approx(2.625)
    assert m.hypervolume_ratio == pytest.approx(2.625 / staircase_area(truth, [2.0, 2.0]))
    assert ERROR_NOTE in comparison.notes and ERROR_NOTE in comparison.markdown()
    header, rows = comparison.preference_rows()
    assert header[-2:] == ["accuracy f1", "accuracy f2"] and rows[0][-2:] == ["0.9", "0.05"]


def test_bad_comparison_input_is_rejected():
    front = two_objective_front([[0.0, 1.0]])
    with pytest.raises(ValueError, match="reference point has 3 entries; pass one per objective"):
        compare_fronts({"a": front}, ref=[1.0, 1.0, 1.0])
    other = Front(np.ones((1, 1)), np.zeros((1, 1)), ["g"])
    with pytest.raises(ValueError, match="compare fronts of the same problem"):
        compare_fronts({"a": front, "b": other})
    with pytest.raises(ValueError, match="unknown labels"):
        compare_fronts({"a": front}, extras={"b": {"x": 1}})


def test_evaluation_preferences_add_the_equal_preference_when_missing():
    assert len(evaluation_preferences(2, 11)) == 11
    grid = evaluation_preferences(3, 11)
    assert len(grid) == 67 and np.allclose(grid[-1], 1 / 3)
    default_8 = evaluation_preferences(8)  # the unit preferences (in pymoo's order) and the equal one
    assert default_8.shape == (9, 8) and np.allclose(default_8[-1], 1 / 8)
    np.testing.assert_array_equal(default_8[:8][np.argsort(default_8[:8].argmax(axis=1))], np.eye(8))


@pytest.mark.parametrize("n_objectives", [3, 5])
def test_plots_for_three_and_more_objectives(tmp_path, n_objectives):
    prefs = evaluation_preferences(n_objectives, 4)
    names = [f"t{i}" for i in range(n_objectives)]
    fronts = {
        "a set": Front(prefs, np.sqrt(prefs), names),
        "one model": Front(prefs, np.full(prefs.shape, 0.5), names),  # a degenerate surface: drawn as points
        "experts": Front(np.eye(n_objectives), 1 - np.eye(n_objectives), names),
    }
    plot_fronts(fronts, tmp_path / "f.png", true_front=np.sqrt(prefs))
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("divisions", [2, 3, 10])
def test_simplex_triangles_tile_the_preference_grid(divisions):
    prefs = uniform_grid(3, divisions + 1)
    triangles = simplex_triangles(prefs)
    assert len(triangles) == divisions**2  # a grid with k divisions per edge tiles the simplex in k^2 triangles
    corners = prefs[triangles][:, :, :2]
    u, v = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    areas = 0.5 * np.abs(u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0])
    assert areas.sum() == pytest.approx(0.5) and areas.min() > 0  # they cover the (r_1, r_2) triangle exactly
    assert simplex_triangles(np.eye(3)) is None  # three models (the experts, say): points, not a surface
    assert simplex_triangles(np.array([[1.0, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0.25, 0.75, 0]])) is None  # one edge


def test_evaluate_command_writes_the_report_of_two_runs(tmp_path, capsys):
    for seed in (0, 1):
        args = ["solve", "--problem", "zdt1", "--steps", "30", "--seed", str(seed), "--quiet"]
        assert main([*args, "--out", str(tmp_path / f"run{seed}")]) == 0
    out = tmp_path / "report"
    runs = [str(tmp_path / "run0"), str(tmp_path / "run1")]
    assert main(["evaluate", *runs, "--out", str(out), "--n", "5", "--ref", "1.5", "8", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "IGD+" in printed and "run0" in printed and "run1" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["ref_point"] == [1.5, 8.0] and [m["label"] for m in report["methods"]] == ["run0", "run1"]
    with open(out / "run1" / "front.csv") as handle:
        rows = list(csv.DictReader(handle))
    objectives = np.array([[float(row["f1"]), float(row["f2"])] for row in rows])
    assert len(rows) == 5  # 0, 0.25, ..., 1: the grid holds the equal preference
    hv = report["methods"][1]["hypervolume"]
    assert hv["method"] == "exact" and hv["value"] == pytest.approx(staircase_area(objectives, [1.5, 8.0]))
    assert "Reference point (1.5, 8)" in (out / "report.md").read_text()
    assert (out / "fronts.png").read_bytes()[:8] == PNG_MAGIC


def test_evaluate_on_a_missing_run_exits_2_naming_it(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert main(["evaluate", str(missing), "--out", str(tmp_path / "report")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_write_report_files(tmp_path):
    fronts = {"runs/a b": two_objective_front([[0.0, 1.0], [1.0, 0.0]])}
    written = write_report(compare_fronts(fronts), fronts, tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "fronts.png",
        "report.json",
        "report.md",
        "runs_a_b/front.csv",
    ]


def test_merging_problem_fronts_are_reported_as_errors(tiny_merging_problem):
    evaluation = tiny_merging_problem.evaluate(tiny_merging_problem.pretrained)
    front = Front(
        np.array([[0.5, 0.5]]),
        evaluation.objectives[None],
        tiny_merging_problem.objective_names,
        {name: values[None] for name, values in evaluation.metrics.items()},
    )
    comparison = compare_fronts({"pretrained": front})
    assert ERROR_NOTE in comparison.notes
    at_equal = comparison.methods[0].at_preferences["equal"]
    np.testing.assert_allclose(at_equal["objectives"], 1 - at_equal["accuracy"])
    assert "accuracy a" in comparison.text()


def test_report_files_hold_the_comparisons_values(tmp_path):
    objectives = {"good": [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]], "worse": [[0.2, 1.0], [0.5, 0.6], [0.5, 0.6]]}
    fronts = {
        label: two_objective_front(points, {"accuracy": 1 - np.asarray(points)}) for label, points in objectives.items()
    }
    comparison = compare_fronts(fronts, extras={"good": {"params": np.int64(264)}})
    written = write_report(comparison, fronts, tmp_path / "r")
    assert all(path.is_file() for path in written)

    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["objective_names"] == ["f1", "f2"] and report["ref_point"] == pytest.approx([1.1, 1.1])
    assert report["ref_rule"] == "nadir of all fronts + 10% of their range, the same for every method"
    assert report["notes"] == [ERROR_NOTE]
    assert report["key_preferences"] == {"e1": [1.0, 0.0], "e2": [0.0, 1.0], "equal": [0.5, 0.5]}
    good, worse = report["methods"]
    assert good["hypervolume"] == {"value": pytest.approx(0.46), "method": "exact", "std_error": 0.0}
    assert worse["hypervolume"]["value"] == pytest.approx(0.33)
    assert (good["n_points"], good["n_non_dominated"], worse["n_non_dominated"]) == (3, 3, 2)
    assert good["hypervolume_ratio"] is None and good["igd"] is None and good["igd_plus"] is None
    assert good["at_preferences"]["e2"] == {"objectives": [1.0, 0.0], "accuracy": [0.0, 1.0]}
    assert worse["at_preferences"]["equal"] == {"objectives": [0.5, 0.6], "accuracy": [0.5, pytest.approx(0.4)]}
    assert good["extras"] == {"params": 264} and worse["extras"] == {}

    markdown = (tmp_path / "r" / "report.md").read_text().splitlines()
    assert markdown[0] == f"# Pareto front comparison: {ERROR_NOTE}"
    assert "- Reference point (1.1, 1.1): nadir of all fronts + 10% of their range, the same for every method." in (
        markdown
    )
    assert "| method | HV | non-dom. | params |" in markdown
    assert "| good | 0.46 | 3/3 | 264 |" in markdown and "| worse | 0.33 | 2/3 | - |" in markdown
    assert "| method | preference | f1 | f2 | accuracy f1 | accuracy f2 |" in markdown
    assert "| good | e1 | 0 | 1 | 1 | 0 |" in markdown and "| worse | equal | 0.5 | 0.6 | 0.5 | 0.4 |" in markdown

    with open(tmp_path / "r" / "worse" / "front.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["pref_f1", "pref_f2", "f1", "f2", "accuracy_f1", "accuracy_f2"]
    assert rows[1:] == [["1", "0", "0.2", "1", "0.8", "0"], ["0.5", "0.5", "0.5", "0.6", "0.5", "0.4"],
                        ["0", "1", "0.5", "0.6", "0.5", "0.4"]]  # fmt: skip


def test_the_tables_mark_an_approximate_hypervolume_and_the_true_front_columns():
    truth = np.stack([np.linspace(0, 1, 5), 1 - np.linspace(0, 1, 5)], axis=1)
    comparison = compare_fronts({"m": two_objective_front([[0.0, 1.0], [1.0, 0.0]])}, true_front=truth)
    header, rows = comparison.summary_rows()
    assert header == ["method", "HV", "HV / true", "IGD", "IGD+", "non-dom."]
    assert rows[0][0] == "m" and rows[0][-1] == "2/2"
    assert comparison.ref_rule.startswith("nadir of all fronts and the true front + 10%")
    assert any(note.startswith("IGD, IGD+ and HV / true are against 5 points") for note in comparison.notes)
    approximate = HypervolumeResult(0.5, "approximate", 0.012)
    comparison.methods[0] = dataclasses.replace(comparison.methods[0], hypervolume=approximate)
    assert comparison.summary_rows()[1][0][1] == "0.5 ± 0.01"
    missing = two_objective_front([[0.0, 1.0], [0.4, 0.4], [1.0, 0.0]])
    missing.prefs[1] = [0.6, 0.4]  # not evaluated at the equal preference: its cells read "-"
    _, rows = compare_fronts({"m": missing}).preference_rows()
    assert rows[2] == ["m", "equal", "-", "-"]


def test_the_default_reference_is_the_union_nadir_plus_a_tenth_of_its_range_true_front_included():
    from mooframe.report import compare_fronts

    names = ["a", "b"]
    fronts = {"x": Front(np.array([[1.0, 0.0]]), np.array([[1.0, 4.0]]), names),
              "y": Front(np.array([[0.0, 1.0]]), np.array([[3.0, 2.0]]), names)}  # fmt: skip
    # nadir (3, 4), ideal (1, 2): range (2, 2) -> (3.2, 4.2)
    np.testing.assert_allclose(compare_fronts(fronts).ref_point, [3.2, 4.2])
    truth = np.array([[0.0, 6.0], [5.0, 1.0]])  # nadir (5, 6), ideal (0, 1): range (5, 5) -> (5.5, 6.5)
    np.testing.assert_allclose(compare_fronts(fronts, true_front=truth).ref_point, [5.5, 6.5])
    with pytest.raises(ValueError, match="^no fronts to compare; pass at least one labelled Front$"):
        compare_fronts({})


def test_evaluation_preferences_count_and_budget_by_hand():
    from mooframe.report import evaluation_preferences

    assert len(evaluation_preferences(3)) == 67  # 11 per edge: C(12, 2) = 66, and the equal preference (off the grid)
    assert len(evaluation_preferences(4)) == 5  # beyond three objectives: the 4 unit preferences and the equal one
    # T = 3, n = 11, refine = 2 counts up to 66 + 1 + (2 - 1) * 3 * 2 = 73 preferences
    assert len(evaluation_preferences(3, 11, max_preferences=73, refine=2)) == 67
    with pytest.raises(ValueError, match="evaluate up to 73 preferences, more than the budget of 72"):
        evaluation_preferences(3, 11, max_preferences=72, refine=2)


def test_text_table_left_aligns_each_column_to_its_widest_cell():
    from mooframe.report import text_table

    assert text_table(["m", "hv"], [["long name", "1"], ["x", "0.25"]]).split("\n") == [
        "m          hv  ",
        "---------  ----",
        "long name  1   ",
        "x          0.25",
    ]
