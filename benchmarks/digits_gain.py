"""PWE-MoE (LS) at the unit preferences of the digits tasks, under the demo's choices and their alternatives.

Prints the fraction of each expert's accuracy gain over the pretrained model that PWE-MoE reaches at e_t:
- two tasks, 1000 steps: Dirichlet alpha 1 (the paper's) vs 0.2 (the demo's);
- two tasks, alpha 0.2, training seeds 0-7: without learning-rate warm-up vs with PWE-MoE's default 100 steps
  (the smallest fraction of each seed);
- three tasks, alpha 0.2: 1000 steps vs 2000 (the demo's 1000 per dimension of the preference simplex).

    PYTHONPATH=. python benchmarks/digits_gain.py
"""

from __future__ import annotations

import numpy as np

from mooframe.demo import DEFAULT_TASKS, expert_front
from mooframe.problems.digits import MultiTaskDigits, torch_threads
from mooframe.solve import solve


class GainFractions:
    """Fractions of the experts' gains reached by PWE-MoE (LS) at e_t on the first `n_tasks` digits tasks."""

    def __init__(self, n_tasks: int) -> None:
        self.problem = MultiTaskDigits(tasks=DEFAULT_TASKS[:n_tasks])
        self.pretrained = self.problem.evaluate(self.problem.pretrained).metrics["accuracy"]
        self.experts = np.diag(expert_front(self.problem).metrics["accuracy"])
        print(f"{n_tasks} tasks: pretrained {self.pretrained.round(3)}, experts {self.experts.round(3)}")

    def __call__(self, **setting) -> np.ndarray:
        with torch_threads(1):
            result = solve(
                self.problem, "pwe_moe", "ls", progress=False, model_kwargs={"upscale": "attention_mlp"}, **setting
            )
        accuracy = np.diag(result.front(np.eye(len(self.experts)), progress=False).metrics["accuracy"])
        return (accuracy - self.pretrained) / (self.experts - self.pretrained)


def main() -> None:
    two = GainFractions(2)
    for alpha in (1.0, 0.2):
        print(f"  alpha {alpha}, 1000 steps: gain fraction {two(steps=1000, alpha=alpha).round(3)}")
    for warmup in (0, 100):
        smallest = np.array([two(steps=1000, alpha=0.2, seed=seed, warmup_steps=warmup).min() for seed in range(8)])
        print(
            f"  alpha 0.2, 1000 steps, warm-up {warmup}: smallest fraction at seeds 0-7 {smallest.round(3)}, "
            f">= 0.9 at {int((smallest >= 0.9).sum())} of 8"
        )
    three = GainFractions(3)
    for steps in (1000, 2000):
        print(f"  alpha 0.2, {steps} steps: gain fraction {three(steps=steps, alpha=0.2).round(3)}")


if __name__ == "__main__":
    main()
