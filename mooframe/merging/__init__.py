"""Model merging over state dicts (name -> tensor): task vectors, task arithmetic, TIES-merging, weight averaging.

Plain functions, used as baselines and as building blocks of the merging Pareto set models. Every state dict
passed in must have the pretrained model's names and shapes (`MergingProblem` checks experts when it is built).
"""

from mooframe.merging.ties import disjoint_merge, ties_merging, trim_top_k
from mooframe.merging.vectors import (
    StateDict,
    add_weighted,
    add_weighted_experts,
    stack_task_vectors,
    task_arithmetic,
    task_vectors,
    weight_average,
)

__all__ = [
    "StateDict",
    "add_weighted",
    "add_weighted_experts",
    "disjoint_merge",
    "stack_task_vectors",
    "task_arithmetic",
    "task_vectors",
    "ties_merging",
    "trim_top_k",
    "weight_average",
]
