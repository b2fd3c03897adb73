"""EPO's two LPs side by side: mooframe's default variant and the published one (`EPO(lp="paper")`).

ZDT2 (hypernetwork, the settings of benchmarks/solvers_zdt2.py): HV ratio to the true front's. Two digits tasks
(PWE-MoE, the demo's settings): HV of the test-error fronts at one shared reference, the ray deviation on the
training and test losses, and the solver's counters (LPs in each mode, fallbacks to r).

    PYTHONPATH=. python benchmarks/epo_lp.py [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np
from pymoo.indicators.hv import HV

from mooframe import solve
from mooframe.demo import ALPHA, DEFAULT_TASKS, ray_deviation, training_front
from mooframe.problems.digits import MultiTaskDigits, torch_threads
from mooframe.report import compare_fronts, evaluation_preferences
from mooframe.solvers.epo import EPO

VARIANTS = ("mooframe", "paper")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    hv = HV(ref_point=np.array([1.1, 1.1]))
    for lp in VARIANTS:
        result = solve("zdt2", "hypernet", EPO(lp=lp), steps=1000, lr=1e-3, seed=args.seed, progress=False)
        ratio = hv(result.front(n=101).objectives) / hv(result.problem.true_front(1000))
        print(f"ZDT2 EPO(lp={lp!r}): HV / true HV {ratio:.4f}  {result.settings['solver_stats']}")
    problem = MultiTaskDigits(tasks=DEFAULT_TASKS[:2], progress=False)
    prefs = evaluation_preferences(2, 11)
    fronts, rows = {}, {}
    for lp in VARIANTS:
        with torch_threads(1):
            result = solve(problem, "pwe_moe", EPO(lp=lp), steps=1000, alpha=ALPHA, seed=args.seed, progress=False,
                           model_kwargs={"upscale": "attention_mlp"})  # fmt: skip
            fronts[lp] = result.front(prefs)
            train = ray_deviation(training_front(result, prefs))
        rows[lp] = f"ray dev. train {train:.4f} test {ray_deviation(fronts[lp]):.4f}  {result.settings['solver_stats']}"
    for method in compare_fronts(fronts).methods:
        print(f"digits PWE-MoE EPO(lp={method.label!r}): HV {method.hypervolume.value:.4f}  {rows[method.label]}")


if __name__ == "__main__":
    main()
