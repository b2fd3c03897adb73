"""PWE-MoE (Tang et al., "Towards Efficient Pareto Set Approximation via Mixture of Experts Based Model Fusion")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mooframe.merging.lowrank import RankLike
from mooframe.models.merging import LinearMergingModel, require_merging_problem, upscaled_modules
from mooframe.problem import Problem


class PWEMoE(LinearMergingModel):
    """Pareto weight-ensembling MoE: preference-routed task arithmetic in the up-scaled modules.

    Each up-scaled module m gets a router R_m(r) = W2 relu(W1 r + b1) + b2 (hidden size 2T; W ~ N(0, 0.01),
    b1 = 0, b2 = lambda) and merged parameters phi_m(r) = phi_0 + sum_t R_m(r)_t tau_t. Everything else is
    merged once by task arithmetic, psi = psi_0 + lambda sum_t tau_t. Only the routers are trained
    (4T^2 + 3T parameters each). At initialization every module is plain task arithmetic with lambda.

    Args:
        problem: a `MergingProblem`.
        upscale: a preset name from `problem.upscale_presets` (e.g. "mlp", "attention_mlp"), or a list of
            regular expressions matched in full against the backbone's module names.
        scaling: lambda, the task-arithmetic coefficient of the fixed part and the routers' initial output.
        task_vector_dtype: "float32" merges from the problem's experts and stores no task vector; "bfloat16"
            keeps the up-scaled task vectors rounded to bfloat16 in a dictionary of their own (memory added, to
            see what the rounding does to the front), or the low-rank factors in bfloat16.
        task_vector_rank: None (full rank), or the up-scaled linear layers' task vectors as truncated SVDs: an
            int k (rank k), or a float f in (0, 1] (the smallest rank keeping a fraction f of each task vector's
            energy); LoRA experts are held exactly at f = 1. Merged without forming the weight matrices.
        release_experts: after the rest is merged once, drop from the problem whatever this model does not read
            again (`MergingProblem.release_experts`); the problem then serves this model alone.

    `solve()` warms its learning rate up over 100 steps by default (`default_warmup_steps`): Adam's first steps
    move every weight by about lr = 1e-2, the size of W1 itself, and as r >= 0 a row of W1 gets a gradient of
    one sign, so without warm-up a third of the routers' hidden units die (relu(W1 r + b1) = 0 on the whole
    simplex) in the first step and some routers end constant in r (docs/pwe-moe.md).
    """

    registry_name = "pwe_moe"

    default_warmup_steps = 100

    def __init__(
        self,
        problem: Problem,
        upscale: str | Sequence[str] = "mlp",
        scaling: float = 0.3,
        task_vector_dtype: str = "float32",
        task_vector_rank: RankLike | None = None,
        release_experts: bool = False,
    ) -> None:
        modules = upscaled_modules(require_merging_problem(problem, "PWEMoE"), upscale)
        groups = {param: module for module, params in modules.items() for param in params}
        super().__init__(problem, groups, scaling, task_vector_dtype, task_vector_rank, release_experts)
        self.upscale = upscale if isinstance(upscale, str) else list(upscale)
        self.scaling, self.task_vector_dtype = scaling, task_vector_dtype
        self.task_vector_rank, self.release_experts = task_vector_rank, release_experts
        self.module_names = list(modules)
        self.routers = nn.ModuleList(router(self.n_objectives, scaling) for _ in self.module_names)

    def coefficients(self, pref: torch.Tensor) -> dict[str, torch.Tensor]:
        pref = pref.to(self.routers[0][0].weight)
        return {name: route(pref) for name, route in zip(self.module_names, self.routers, strict=True)}

    def dead_routers(self) -> list[str]:
        """The up-scaled modules whose router no longer depends on the preference: every hidden unit is inactive on
        the whole simplex, W1 e_t + b1 <= 0 at each vertex e_t (so relu(W1 r + b1) = 0 for every r, the
        pre-activation being affine in r), and the module is merged with the constant b2 at every preference."""
        vertices = torch.eye(self.n_objectives).to(self.routers[0][0].weight)
        with torch.no_grad():
            return [
                name
                for name, route in zip(self.module_names, self.routers, strict=True)
                if bool((route[0](vertices) <= 0).all())
            ]


def router(n_tasks: int, scaling: float) -> nn.Sequential:
    """R(r) = W2 relu(W1 r + b1) + b2 with hidden size 2T, W1, W2 ~ N(0, 0.01), b1 = 0, b2 = lambda."""
    layers = nn.Sequential(nn.Linear(n_tasks, 2 * n_tasks), nn.ReLU(), nn.Linear(2 * n_tasks, n_tasks))
    for linear in (layers[0], layers[2]):
        nn.init.normal_(linear.weight, std=0.01)
    nn.init.zeros_(layers[0].bias)
    nn.init.constant_(layers[2].bias, scaling)
    return layers
