"""PWE-MoE against preference-weighted task arithmetic on the language-model default (`lm_digits`).

Prints, for each method, the hypervolume of the test-error front (exact match) at the demo's preferences (11 per
simplex edge) with reference points 1 and 1.1 per error (the demo's: the nadir of its fronts + 10%) and, at each
unit preference e_t, the fraction of expert t's gain over the base model it keeps:
(acc_t(e_t) - acc_t(base)) / (acc_t(expert t) - acc_t(base)); for PWE-MoE, the routers left constant in the
preference (`PWEMoE.dead_routers`). One thread; LS. Defaults: the LM demo's (`mooframe.demo.FAMILIES["lm"]`).

Usage: python benchmarks/lm_digits_gain.py [--tasks copy reverse] [--experts full|lora] [--steps N] [--lr LR]
           [--batch 16] [--alpha A] [--warmup W] [--seed 0] [--upscale PRESET] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mooframe.demo import FAMILIES, LM_BATCH_SIZE
from mooframe.indicators import hypervolume
from mooframe.pareto_set import FunctionalModel
from mooframe.problems.lm_default import DigitStringTasks
from mooframe.report import evaluation_preferences
from mooframe.solve import solve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    demo = FAMILIES["lm"]
    parser.add_argument("--tasks", nargs="+", default=["copy", "reverse"])
    parser.add_argument("--experts", choices=("full", "lora"), default="full")
    parser.add_argument("--steps", type=int, help="default: the demo's, per simplex dimension (T - 1)")
    parser.add_argument("--lr", type=float, default=demo.lr)
    parser.add_argument("--batch", type=int, default=LM_BATCH_SIZE)
    parser.add_argument("--alpha", type=float, default=demo.alpha)
    parser.add_argument("--warmup", type=int, help="warm-up steps (default: solve()'s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--upscale", default=demo.methods["PWE-MoE (LS)"][2]["upscale"])
    parser.add_argument("--cache-dir")
    args = parser.parse_args()
    torch.set_num_threads(1)
    problem = DigitStringTasks(args.tasks, args.experts, batch_size=args.batch, cache_dir=args.cache_dir,
                               progress=False)  # fmt: skip
    n = problem.n_objectives
    base = problem.evaluate(problem.pretrained).metrics["accuracy"]
    expert = np.array(
        [problem.evaluate(FunctionalModel(problem.pretrained, s)).metrics["accuracy"][t]
         for t, s in enumerate(problem.expert_states)]
    )  # fmt: skip
    print(f"tasks {args.tasks}, {args.experts} experts: base {np.round(base, 3)}, experts {np.round(expert, 3)}")
    prefs = evaluation_preferences(n, 11)
    trained = args.steps if args.steps is not None else demo.steps * (n - 1)
    for model, steps, kwargs in (("task_arithmetic", 0, {}), ("pwe_moe", trained, {"upscale": args.upscale})):
        start = time.perf_counter()
        warmup = None if not steps else args.warmup
        result = solve(problem, model=model, solver="ls", steps=steps, lr=args.lr, alpha=args.alpha, seed=args.seed,
                       warmup_steps=warmup, progress=False, model_kwargs=kwargs)  # fmt: skip
        front = result.front(prefs)
        accuracy = front.metrics["accuracy"]
        at_unit = np.array([accuracy[np.argmax(prefs[:, t])][t] for t in range(n)])
        gains = (at_unit - base) / (expert - base)
        hv = [float(hypervolume(front.objectives, np.full(n, ref))) for ref in (1.0, 1.1)]
        dead = f"  dead routers {result.model.dead_routers()}" if model == "pwe_moe" else ""
        print(f"{model:<16} steps {steps:>4}  HV {hv[0]:.4f} (ref 1), {hv[1]:.4f} (ref 1.1)  gain kept at e_t "
              f"{np.round(gains, 3).tolist()}{dead}  ({time.perf_counter() - start:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
