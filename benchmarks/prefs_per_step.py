"""K preferences a step (`solve(prefs_per_step=K)`): K = 1 against larger K at equal steps, equal forward passes
(preferences trained) and equal wall time, on one torch thread.

`hypernet`: the hypernetwork in LibMOON's PSL setting (a 4-layer MLP: 3 hidden layers of 256, Adam lr 1e-3 with
no schedule, 1000 steps; LibMOON trains 128 preferences a step) with Tchebycheff (ideal point 0) on ZDT1, DTLZ2 and
VLMOP2. HV: of the front at the uniform grid (101 preferences for 2 objectives, 231 for 3) over the true front's,
reference point 1.1 in every objective. Angle: the mean, over the grid's interior preferences, of the angle between
the objective vector f(x(r)) and the preference's ray, in degrees. Ray convention: mooframe's, r_1 f_1 = ... =
r_T f_T, i.e. the ray through 1/r (a larger r_t asks for a smaller f_t); Tchebycheff max_t r_t f_t is minimized on
it. LibMOON passes 1/r instead, so its ray through r is the same line. Equal wall time: K runs 1000 / c steps, c
the seconds a step at K over K = 1's, measured by pairs of short runs one right after the other (the median of
three pairs), so that a shared machine's changing load affects both alike.

`digits`: PWE-MoE (Attention + MLP routed, the demo's alpha 0.2) on the embedded digits problem with 2 or 3 tasks,
LS and EPO, at an equal number of preferences trained (`--forwards`, default 300: fewer than the demo's 1000
steps to stay within a few minutes). PWE-MoE evaluates its K preferences in a loop, so equal forward passes are
also about equal wall time (the seconds are printed). HV: of the training cross-entropies at the 11-point (66-point)
grid, reference point 1.1 x the largest loss of any run in the table; ray deviation: the mean EPO non-uniformity
mu(r l) over the interior preferences (0 on the rays; `mooframe.demo.ray_deviation`).

    PYTHONPATH=. python benchmarks/prefs_per_step.py hypernet [--problems zdt1 dtlz2 vlmop2] [--ks 1 4 32 128]
        [--budgets steps fwd time]
    PYTHONPATH=. python benchmarks/prefs_per_step.py digits --tasks 2 [--forwards 300] [--ks 1 4 32 128]
"""

from __future__ import annotations

import argparse

import numpy as np
from pymoo.indicators.hv import HV

from mooframe import solve
from mooframe.demo import ALPHA, DEFAULT_TASKS, ray_deviation, training_front
from mooframe.preferences import uniform_grid
from mooframe.problems.digits import MultiTaskDigits, torch_threads
from mooframe.registry import build_problem
from mooframe.report import evaluation_preferences

PSL = {"model_kwargs": {"hidden": 256, "n_layers": 3}, "lr": 1e-3, "lr_schedule": "constant", "progress": False}


def ray_angles(prefs: np.ndarray, objectives: np.ndarray) -> np.ndarray:
    """Degrees between each objective vector and the ray through 1/r (interior preferences only)."""
    interior = np.all(prefs > 0, axis=1)
    rays = 1.0 / prefs[interior]
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    points = objectives[interior] / np.linalg.norm(objectives[interior], axis=1, keepdims=True)
    return np.degrees(np.arccos(np.clip((rays * points).sum(1), -1.0, 1.0)))


def hypernet(problems: list[str], ks: list[int], steps: int, budgets: list[str]) -> None:
    header = ("problem", "K", "budget", "steps", "prefs seen", "HV ratio", "angle", "s")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (7, 4, 12, 6, 10, 8, 7, 6), strict=True)))
    for name in problems:
        psl_run(name, 1, steps, "K = 1")
        for k in (k for k in ks if k != 1):
            if "steps" in budgets:
                psl_run(name, k, steps, "equal steps")
            if "fwd" in budgets:
                psl_run(name, k, max(1, round(steps / k)), "equal fwd")
            if "time" in budgets:
                ratio = step_time_ratio(name, k)
                print(f"{name:>7} {k:4d} seconds a step over K = 1's: {ratio:.2f}")
                psl_run(name, k, max(1, round(steps / ratio)), "equal time")


def step_time_ratio(name: str, k: int, repeats: int = 3, steps: int = 30) -> float:
    """Seconds a step at K over K = 1's: the median of `repeats` pairs of short runs, one right after the other, so
    that the load of a shared machine, which changes over a long benchmark, affects both alike."""
    ratios = []
    for _ in range(repeats):
        one, many = (
            solve(name, "hypernet", "tchebycheff", steps=steps, prefs_per_step=n, **PSL).settings["train_seconds"]
            for n in (1, k)
        )
        ratios.append(many / one)
    return float(np.median(ratios))


def psl_run(name: str, k: int, steps: int, budget: str) -> float:
    """Train the PSL hypernetwork on problem `name` with K = `k`, print a row, return the training seconds."""
    problem = build_problem(name)
    n_obj = problem.n_objectives
    grid = uniform_grid(n_obj, 101 if n_obj == 2 else 21)
    hv = HV(ref_point=np.full(n_obj, 1.1))
    result = solve(problem, "hypernet", "tchebycheff", steps=steps, prefs_per_step=k, **PSL)
    objectives = result.front(grid).objectives
    seconds = result.settings["train_seconds"]
    ratio, angle = hv(objectives) / hv(problem.true_front()), ray_angles(grid, objectives).mean()
    cells = f"{steps:6d} {steps * k:10d} {ratio:8.4f} {angle:7.2f} {seconds:6.1f}"
    print(f"{name:>7} {k:4d} {budget:>12} {cells}", flush=True)
    return seconds


def digits(n_tasks: int, ks: list[int], forwards: int) -> None:
    problem = MultiTaskDigits(tasks=DEFAULT_TASKS[:n_tasks])
    prefs = evaluation_preferences(n_tasks, 11)
    rows = []
    for solver in ("ls", "epo"):
        for k in ks:
            steps = max(1, round(forwards / k))
            result = solve(problem, "pwe_moe", solver, steps=steps, prefs_per_step=k, alpha=ALPHA, progress=False,
                           model_kwargs={"upscale": "attention_mlp"})  # fmt: skip
            front = training_front(result, prefs)
            rows.append((solver, k, steps, front, result.settings["train_seconds"]))
            print(f"  trained {solver} K={k} in {rows[-1][-1]:.1f} s", flush=True)
    ref = 1.1 * max(front.metrics["loss"].max() for *_, front, _ in rows)
    hv = HV(ref_point=np.full(n_tasks, ref))
    print(f"{n_tasks} tasks, {forwards} preferences trained, HV reference point {ref:.3f} (training cross-entropies)")
    print(f"{'solver':>6} {'K':>4} {'steps':>6} {'HV':>8} {'ray dev':>8} {'s':>6}")
    for solver, k, steps, front, seconds in rows:
        cells = f"{hv(front.metrics['loss']):8.4f} {ray_deviation(front):8.4f} {seconds:6.1f}"
        print(f"{solver:>6} {k:4d} {steps:6d} {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["hypernet", "digits"])
    parser.add_argument("--problems", nargs="+", default=["zdt1", "dtlz2", "vlmop2"], help="hypernet part")
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 4, 32, 128], help="preferences a step")
    parser.add_argument("--steps", type=int, default=1000, help="hypernet: steps of the K = 1 run (default 1000)")
    parser.add_argument("--budgets", nargs="+", default=["steps", "fwd", "time"], help="hypernet: budgets to run")
    parser.add_argument("--tasks", type=int, default=2, choices=[2, 3], help="digits: tasks (default 2)")
    parser.add_argument("--forwards", type=int, default=300, help="digits: preferences trained (default 300)")
    args = parser.parse_args()
    with torch_threads(1):
        if args.part == "hypernet":
            hypernet(args.problems, args.ks, args.steps, args.budgets)
        else:
            digits(args.tasks, args.ks, args.forwards)


if __name__ == "__main__":
    main()
