"""The demo's methods on two and three digits tasks: PWE-MoE against the experts and task arithmetic; the report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mooframe.cli import main
from mooframe.demo import METHODS, expert_front, ray_deviation, run_demo, run_methods
from mooframe.front import Front
from mooframe.problems.digits import DEFAULT_TASKS, MultiTaskDigits
from mooframe.report import compare_fronts

COMPARED = {label: METHODS[label] for label in ("PWE-MoE (LS)", "PWE-MoE (EPO)", "task arithmetic")}
#: measured at the demo's steps, seed 0: PWE-MoE (LS) reaches 1.036 and 1.065 of the experts' gain at e_1, e_2 on two
#: tasks, 0.952, 1.011 and 0.914 on three (on two, at training seeds 0-7 the smallest fraction was >= 0.9 at 7
#: seeds, 0.893 at the eighth)
GAIN_FRACTION = 0.9


@pytest.fixture(scope="module")
def two_tasks(digits_cache):
    problem = MultiTaskDigits(tasks=DEFAULT_TASKS[:2])
    return problem, run_methods(problem, steps=1000, progress=False, methods=COMPARED)


@pytest.fixture(scope="module")
def three_tasks(digits_cache):
    """The demo's 3-task run (2000 steps) of PWE-MoE (LS); EPO's 3-task HV is not above task arithmetic's."""
    problem = MultiTaskDigits(tasks=DEFAULT_TASKS[:3])
    methods = {label: COMPARED[label] for label in ("PWE-MoE (LS)", "task arithmetic")}
    return problem, run_methods(problem, steps=2000, progress=False, methods=methods)


def _at_unit_preferences(front: Front) -> np.ndarray:
    """accuracy[t] of the solution at e_t."""
    rows = [int(np.flatnonzero(np.isclose(front.prefs[:, t], 1.0))[0]) for t in range(front.prefs.shape[1])]
    return front.metrics["accuracy"][rows, range(len(rows))]


@pytest.mark.slow
@pytest.mark.parametrize("tasks", ["two_tasks", "three_tasks"])
def test_pwe_moe_reaches_most_of_the_experts_gain_at_unit_preferences(tasks, request):
    problem, runs = request.getfixturevalue(tasks)
    pretrained = problem.evaluate(problem.pretrained).metrics["accuracy"]
    experts = _at_unit_preferences(runs["experts"].front)
    assert np.all(experts > pretrained)
    fraction = (_at_unit_preferences(runs["PWE-MoE (LS)"].front) - pretrained) / (experts - pretrained)
    assert np.all(fraction >= GAIN_FRACTION), fraction


@pytest.mark.slow
@pytest.mark.parametrize("tasks", ["two_tasks", "three_tasks"])
def test_pwe_moe_has_a_higher_hypervolume_than_task_arithmetic(tasks, request):
    """In the demo's report: 2 tasks LS 0.2350, EPO 0.2343, task arithmetic 0.2091; 3 tasks LS 0.2235, TA 0.2171."""
    _, runs = request.getfixturevalue(tasks)
    comparison = compare_fronts({label: run.front for label, run in runs.items()})
    hv = {m.label: m.hypervolume.value for m in comparison.methods}
    pwe_moe = [label for label in hv if label.startswith("PWE-MoE")]
    assert pwe_moe and all(hv[label] > hv["task arithmetic"] for label in pwe_moe), hv


@pytest.mark.slow
def test_epo_is_at_least_as_close_to_the_preference_rays_as_ls_on_the_training_losses(two_tasks):
    """EPO steers the training losses onto the rays (measured on the 11-point grid: EPO 0.0051, LS 0.0592)."""
    _, runs = two_tasks
    deviation = {label: runs[label].train_ray_deviation for label in ("PWE-MoE (LS)", "PWE-MoE (EPO)")}
    assert deviation["PWE-MoE (EPO)"] <= deviation["PWE-MoE (LS)"]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="not met on held-out data: measured ray deviation EPO 0.029 > LS 0.011")
def test_epo_is_at_least_as_close_to_the_preference_rays_as_ls_on_test_losses(two_tasks):
    _, runs = two_tasks
    assert ray_deviation(runs["PWE-MoE (EPO)"].front) <= ray_deviation(runs["PWE-MoE (LS)"].front)


def test_ray_deviation_is_zero_on_the_rays_and_ignores_the_vertices():
    prefs = np.array([[1.0, 0.0], [0.25, 0.75], [0.5, 0.5]])
    on_rays = np.array([[0.1, 5.0], [3.0, 1.0], [2.0, 2.0]])  # r_1 l_1 = r_2 l_2 at the interior preferences
    front = Front(prefs, on_rays, ["a", "b"], {"loss": on_rays})
    assert ray_deviation(front) == pytest.approx(0.0, abs=1e-12)
    off = Front(prefs, on_rays, ["a", "b"], {"loss": np.array([[0.1, 5.0], [1.0, 1.0], [2.0, 2.0]])})
    l_hat = np.array([0.25, 0.75])  # r * l at (0.25, 0.75), normalized
    assert ray_deviation(off) == pytest.approx(np.sum(l_hat * np.log(2 * l_hat)) / 2)


@pytest.mark.slow
def test_expert_front_puts_expert_t_at_e_t(two_tasks):
    problem, runs = two_tasks
    front = expert_front(problem)
    np.testing.assert_array_equal(front.prefs, np.eye(2))
    assert front.objectives[0, 0] < front.objectives[1, 0] and front.objectives[1, 1] < front.objectives[0, 1]
    np.testing.assert_allclose(front.objectives, 1 - front.metrics["accuracy"])


@pytest.mark.slow
def test_demo_writes_the_report_and_plots_with_the_fronts_of_an_in_process_run(digits_cache, tmp_path):
    methods = {"LS": METHODS["PWE-MoE (LS)"]}
    report_path = run_demo(tmp_path, steps=2, progress=False, methods=methods, workers=2)
    report = report_path.read_text()
    for section in ("## 2 tasks: upright, rotated", "## 3 tasks: upright, rotated, inverted"):
        assert section in report
    assert report.count("| LS | e1 |") == 2 and report.count("| experts | e1 |") == 2
    for folder in ("two_tasks", "three_tasks"):
        assert f"![fronts]({folder}/fronts.png)" in report
        png = (tmp_path / folder / "fronts.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
    runs = run_methods(MultiTaskDigits(tasks=["upright", "rotated"]), steps=2, progress=False, methods=methods)
    for method in compare_fronts({label: run.front for label, run in runs.items()}).methods:
        assert f"| {method.label} | {method.hypervolume.value:.4g} |" in report  # worker process == this one


def test_demo_command_passes_its_options(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr("mooframe.demo.run_demo", lambda out, **kwargs: calls.append((out, kwargs)) or tmp_path)
    assert main(["demo", "--out", "somewhere", "--steps", "7", "--seed", "3", "--quiet", "--workers", "1"]) == 0
    expected = {"steps": 7, "seed": 3, "progress": False, "workers": 1, "device": "cpu", "family": "digits"}
    assert calls == [("somewhere", expected)]
    assert f"report written to {tmp_path}" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_baselines_are_single_points_of_the_papers_merges(digits_cache):
    from mooframe.demo import run_method
    from mooframe.merging import weight_average
    from mooframe.pareto_set import FunctionalModel

    problem = MultiTaskDigits(tasks=DEFAULT_TASKS[:2])
    runs = {label: run_method(problem, METHODS[label], steps=0) for label in ("weight averaging", "RegMean")}
    for run in runs.values():
        np.testing.assert_allclose(run.front.prefs, [[0.5, 0.5]])
        assert run.trainable_parameters == 0
    average = problem.evaluate(FunctionalModel(problem.pretrained, weight_average(problem.expert_states)))
    np.testing.assert_allclose(runs["weight averaging"].front.objectives[0], average.objectives)
    assert not np.allclose(runs["RegMean"].front.objectives[0], average.objectives)  # its own merge, not the mean


def test_training_front_on_a_sample_scores_the_seeded_examples_of_each_task(tiny_merging_problem):
    from mooframe import solve
    from mooframe.demo import training_front

    problem = tiny_merging_problem
    result = solve(problem, "task_arithmetic", "ls", steps=0, progress=False)
    prefs = np.array([[0.3, 0.7], [0.8, 0.2]])
    test_data = problem.test_data
    everything = training_front(result, prefs)
    assert training_front(result, prefs, sample=10_000).metrics["accuracy"] == pytest.approx(
        everything.metrics["accuracy"], abs=0
    )  # a sample larger than the split is all of it (in another order)
    sampled = training_front(result, prefs, sample=7)
    for k, pref in enumerate(prefs):
        model = result.model_at(pref)
        for task, data in enumerate(problem.train_data):
            index = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:7]
            inputs, labels = (tensor[index] for tensor in data.tensors)
            with torch.no_grad():
                correct = (problem.heads[task](model(inputs)).argmax(-1) == labels).sum().item()
            assert sampled.metrics["accuracy"][k, task] == correct / 7
    assert not np.array_equal(sampled.metrics["loss"], everything.metrics["loss"])
    assert problem.test_data is test_data  # the test split is back in place
