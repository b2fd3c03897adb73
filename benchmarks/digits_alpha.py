"""PWE-MoE (LS) on two digits tasks: Dirichlet alpha 1 (the paper's) vs 0.2 (the demo's), side by side.

Prints the fraction of each expert's accuracy gain over the pretrained model that PWE-MoE reaches at e_t.

    PYTHONPATH=. python benchmarks/digits_alpha.py
"""

from __future__ import annotations

import numpy as np

from mooframe.demo import expert_front
from mooframe.problems.digits import MultiTaskDigits, torch_threads
from mooframe.solve import solve


def main(steps: int = 1000) -> None:
    problem = MultiTaskDigits(tasks=["upright", "rotated"])
    pretrained = problem.evaluate(problem.pretrained).metrics["accuracy"]
    experts = np.diag(expert_front(problem).metrics["accuracy"])
    print(f"pretrained {pretrained.round(3)}, experts {experts.round(3)}")
    for alpha in (1.0, 0.2):
        with torch_threads(1):
            result = solve(
                problem,
                "pwe_moe",
                "ls",
                steps=steps,
                alpha=alpha,
                progress=False,
                model_kwargs={"upscale": "attention_mlp"},
            )
        accuracy = np.diag(result.front(np.eye(2)).metrics["accuracy"])
        print(
            f"alpha {alpha}: accuracy at e_t {accuracy.round(3)}, "
            f"gain fraction {((accuracy - pretrained) / (experts - pretrained)).round(3)}"
        )


if __name__ == "__main__":
    main()
