"""PWE-MoE (LS) and (EPO) on two digits tasks: how close each front is to the preference rays, on the training
losses (which the solvers see) and on the test losses (which the demo reports), preference by preference.

Prints, per preference r on the demo's 11-point grid, the cross-entropies l and the non-uniformity mu(r l) of
both splits, then the ray deviation (mean mu over the interior preferences) of each split. With --merge-fraction
the routers train on that fraction of the training split, held out from the experts' build.

    PYTHONPATH=. python benchmarks/digits_rays.py [--seed 0] [--merge-fraction 0.2] [--batch-size 16]
"""

from __future__ import annotations

import argparse

import numpy as np

from mooframe.demo import ALPHA, DEFAULT_TASKS, ray_deviation, training_front
from mooframe.problems.digits import MultiTaskDigits, torch_threads
from mooframe.report import evaluation_preferences
from mooframe.solve import solve
from mooframe.solvers.epo import non_uniformity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="training seed (the problem is the demo's)")
    parser.add_argument("--merge-fraction", type=float, default=0.0, help="see MultiTaskDigits (default 0)")
    parser.add_argument("--batch-size", type=int, default=16, help="training examples per task per step (default 16)")
    args = parser.parse_args()
    problem = MultiTaskDigits(tasks=DEFAULT_TASKS[:2], merge_fraction=args.merge_fraction, batch_size=args.batch_size)
    prefs = evaluation_preferences(2, 11)
    for solver in ("ls", "epo"):
        with torch_threads(1):
            result = solve(problem, "pwe_moe", solver, steps=1000, alpha=ALPHA, seed=args.seed, progress=False,
                           model_kwargs={"upscale": "attention_mlp"})  # fmt: skip
            fronts = {"test": result.front(prefs), "train": training_front(result, prefs)}
        print(f"PWE-MoE ({solver.upper()})")
        for i, r in enumerate(prefs):
            cells = [f"{split} l {np.round(f.metrics['loss'][i], 3)} mu {non_uniformity(r * f.metrics['loss'][i]):.4f}"
                     for split, f in fronts.items()]  # fmt: skip
            print(f"  r_1 {r[0]:.1f}: " + " | ".join(cells))
        print("  ray deviation: " + ", ".join(f"{split} {ray_deviation(f):.4f}" for split, f in fronts.items()))


if __name__ == "__main__":
    main()
