"""PWE-MoE (LS) at the unit preferences of the digits tasks, under the demo's choices and their alternatives.

Prints the fraction of each expert's accuracy gain over the pretrained model that PWE-MoE reaches at e_t:
- two tasks, 1000 steps: Dirichlet alpha 1 (the paper's) vs 0.2 (the demo's), the latter at training seeds 0-2;
- three tasks, alpha 0.2: 1000 steps vs 2000 (the demo's 1000 per dimension of the preference simplex).

    PYTHONPATH=. python benchmarks/digits_gain.py
"""

from __future__ import annotations

import numpy as np

from mooframe.demo import DEFAULT_TASKS, expert_front
from mooframe.problems.digits import MultiTaskDigits, torch_threads
from mooframe.solve import solve


def gain_fractions(n_tasks: int, settings: list[dict]) -> None:
    problem = MultiTaskDigits(tasks=DEFAULT_TASKS[:n_tasks])
    pretrained = problem.evaluate(problem.pretrained).metrics["accuracy"]
    experts = np.diag(expert_front(problem).metrics["accuracy"])
    print(f"{n_tasks} tasks: pretrained {pretrained.round(3)}, experts {experts.round(3)}")
    for setting in settings:
        with torch_threads(1):
            result = solve(
                problem, "pwe_moe", "ls", progress=False, model_kwargs={"upscale": "attention_mlp"}, **setting
            )
        accuracy = np.diag(result.front(np.eye(n_tasks)).metrics["accuracy"])
        print(
            f"  {setting}: accuracy at e_t {accuracy.round(3)}, "
            f"gain fraction {((accuracy - pretrained) / (experts - pretrained)).round(3)}"
        )


def main() -> None:
    gain_fractions(2, [{"steps": 1000, "alpha": 1.0}] + [{"steps": 1000, "alpha": 0.2, "seed": s} for s in range(3)])
    gain_fractions(3, [{"steps": 1000, "alpha": 0.2}, {"steps": 2000, "alpha": 0.2}])


if __name__ == "__main__":
    main()
