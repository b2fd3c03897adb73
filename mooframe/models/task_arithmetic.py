"""Preference-weighted task arithmetic and TIES-merging: merging baselines with nothing to train."""

from __future__ import annotations

import torch
from torch import nn

from mooframe.merging import disjoint_merge, task_vectors, trim_top_k
from mooframe.merging.lowrank import RankLike
from mooframe.models.merging import LinearMergingModel, MergingModel, TensorDict, require_merging_problem
from mooframe.problem import Problem


class PreferenceTaskArithmetic(LinearMergingModel):
    """theta(r) = theta_0 + lambda T sum_t r_t tau_t: task arithmetic with the preference as task weights.

    At the equal preference r = 1/T this is plain task arithmetic with lambda (Ilharco et al., 2023); at a
    corner e_t it is theta_0 + lambda T tau_t. Nothing is trained: the front is what merging alone reaches.
    `task_vector_dtype`, `task_vector_rank` and `release_experts` as for `LinearMergingModel`.
    """

    registry_name = "task_arithmetic"

    def __init__(
        self,
        problem: Problem,
        scaling: float = 0.3,
        task_vector_dtype: str = "float32",
        task_vector_rank: RankLike | None = None,
        release_experts: bool = False,
    ) -> None:
        names = require_merging_problem(problem, type(self).__name__).pretrained_state()
        groups = dict.fromkeys(names, "all")
        super().__init__(problem, groups, scaling, task_vector_dtype, task_vector_rank, release_experts)
        self.scaling, self.task_vector_dtype = scaling, task_vector_dtype
        self.task_vector_rank, self.release_experts = task_vector_rank, release_experts

    def coefficients(self, pref: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"all": self.scaling * self.n_objectives * pref}


class PreferenceTIES(MergingModel):
    """theta(r) = theta_0 + lambda * disjoint_merge(trim_top_k(tau, k), w = T r): TIES with preference weights.

    Trimming does not depend on r and is done once; the sign election and the disjoint mean use the weighted
    task vectors w_t tau_t, so at r = 1/T this is plain TIES-merging (Yadav et al., 2023). Nothing is trained.
    """

    registry_name = "ties"

    def __init__(self, problem: Problem, scaling: float = 0.3, top_k: float = 0.2) -> None:
        super().__init__(problem)
        self.scaling, self.top_k = scaling, top_k
        theta_0 = problem.pretrained_state()
        self.base = TensorDict(theta_0)
        self.trimmed = nn.ModuleList(
            TensorDict(t) for t in trim_top_k(task_vectors(theta_0, problem.expert_states), top_k)
        )

    def merged_parameters(self, pref: torch.Tensor) -> dict[str, torch.Tensor]:
        merged = disjoint_merge([dict(t.items()) for t in self.trimmed], self.n_objectives * pref)
        return {name: base + self.scaling * merged[name] for name, base in self.base.items()}
