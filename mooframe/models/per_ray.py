"""One fully fine-tuned model per preference ray: the cost and quality baseline of Pareto set learning."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from mooframe.merging import task_arithmetic, task_vectors
from mooframe.models.merging import MergingModel
from mooframe.preferences import check_preference, uniform_grid
from mooframe.problem import Problem

INITS = ("task_arithmetic", "pretrained")


class PerRayModels(MergingModel):
    """K separate full models, one per preference ray r_k, each fine-tuned with the solver at r_k.

    Training cycles through the rays (step s trains ray s mod K, so each gets steps / K updates); the solution
    for any r is the model of the nearest ray. Memory and training cost grow with K full models.

    Args:
        problem: a `MergingProblem`.
        rays: n for the uniform grid with n points per simplex edge (n rays for two objectives, n(n+1)/2 for
            three), or an explicit list of preferences.
        init: start each model from "task_arithmetic" at its ray (theta_0 + lambda T sum_t r_kt tau_t) or from
            the "pretrained" model.
        scaling: lambda of the task-arithmetic initialization.
    """

    registry_name = "per_ray"

    def __init__(
        self,
        problem: Problem,
        rays: int | Sequence[Sequence[float]] = 5,
        init: str = "task_arithmetic",
        scaling: float = 0.3,
    ) -> None:
        super().__init__(problem)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; pass one of {', '.join(INITS)}")
        self.rays = rays if isinstance(rays, int) else [list(map(float, ray)) for ray in rays]
        self.init, self.scaling = init, scaling
        grid = uniform_grid(self.n_objectives, rays) if isinstance(rays, int) else np.asarray(self.rays)
        self.register_buffer("ray_prefs", torch.stack([check_preference(ray, self.n_objectives) for ray in grid]))
        theta_0 = problem.pretrained_state()
        taus = task_vectors(theta_0, problem.expert_states)
        self.models = nn.ModuleList()
        for ray in self.ray_prefs:
            start = (
                theta_0 if init == "pretrained" else task_arithmetic(theta_0, taus, scaling * self.n_objectives * ray)
            )
            model = copy.deepcopy(self.backbone)
            with torch.no_grad():
                for name, parameter in model.named_parameters():
                    parameter.copy_(start[name])
            self.models.append(model.requires_grad_(True))

    def training_preference(self, sampled: torch.Tensor, step: int) -> torch.Tensor:
        return self.ray_prefs[step % len(self.ray_prefs)]

    def solution_key(self, pref: torch.Tensor) -> int:
        """The index of the ray nearest to `pref`, whose model is the solution."""
        return int(torch.cdist(pref.to(self.ray_prefs)[None], self.ray_prefs).argmin())

    def merged_parameters(self, pref: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(self.models[self.solution_key(pref)].named_parameters())
