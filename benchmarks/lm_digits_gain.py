"""PWE-MoE against preference-weighted task arithmetic on the language-model default (`lm_digits`).

Prints, for each method, the hypervolume of the test-error front (exact match) at 11 preferences (reference point
(1, ..., 1)) and, at each unit preference e_t, the fraction of expert t's gain over the base model it keeps:
(acc_t(e_t) - acc_t(base)) / (acc_t(expert t) - acc_t(base)). One thread; LS; Dirichlet alpha 0.2.

Usage: python benchmarks/lm_digits_gain.py [--tasks copy reverse] [--experts full|lora] [--steps 200] [--lr 3e-2]
           [--batch 16] [--upscale attention_mlp] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mooframe.indicators import hypervolume
from mooframe.pareto_set import FunctionalModel
from mooframe.problems.lm_default import DigitStringTasks
from mooframe.report import evaluation_preferences
from mooframe.solve import solve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["copy", "reverse"])
    parser.add_argument("--experts", choices=("full", "lora"), default="full")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=3e-2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--upscale", default="attention_mlp")
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
    for model, steps, kwargs in (("task_arithmetic", 0, {}), ("pwe_moe", args.steps, {"upscale": args.upscale})):
        start = time.perf_counter()
        result = solve(problem, model=model, solver="ls", steps=steps, lr=args.lr, alpha=0.2, progress=False,
                       model_kwargs=kwargs)  # fmt: skip
        front = result.front(prefs)
        accuracy = front.metrics["accuracy"]
        at_unit = np.array([accuracy[np.argmax(prefs[:, t])][t] for t in range(n)])
        gains = (at_unit - base) / (expert - base)
        hv = float(hypervolume(front.objectives, np.ones(n)))
        print(f"{model:<16} steps {steps:>4}  HV {hv:.4f}  gain kept at e_t {np.round(gains, 3).tolist()}  "
              f"({time.perf_counter() - start:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
