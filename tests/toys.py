"""Toys for tests and benchmarks: the smallest merging Pareto set model and LS routed through the Gram path."""

from __future__ import annotations

import torch
from torch import nn

from mooframe.pareto_set import FunctionalModel, ParetoSetModel
from mooframe.problems.merging import MergingProblem
from mooframe.solvers.ls import LinearScalarization


class GramLS(LinearScalarization):
    """LS through the per-task-gradient path (as EPO and MGDA): must give exactly the LS update."""

    needs_gram = True


class RouterMerge(ParetoSetModel):
    """theta(r) = theta_0 + sum_t c_t(r) tau_t with a linear router c(r) = W r + b: the smallest merging model."""

    def __init__(self, problem: MergingProblem) -> None:
        super().__init__(problem)
        self.router = nn.Linear(problem.n_objectives, problem.n_objectives)
        self.merging_problem = problem

    def forward(self, pref: torch.Tensor) -> FunctionalModel:
        coefficients = self.router(pref)
        base = self.merging_problem.pretrained_state()
        experts = self.merging_problem.expert_states
        merged = {
            name: theta + sum(c * (expert[name] - theta) for c, expert in zip(coefficients, experts, strict=True))
            for name, theta in base.items()
        }
        return FunctionalModel(self.merging_problem.pretrained, merged)


def meta_hf_clip_vision(layers: int, width: int, patch: int) -> nn.Module:
    """A Hugging Face CLIP vision tower of the given layout on the meta device (no memory, no download)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from mooframe.adapters import hf_clip

    config = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=width // 64,
        patch_size=patch,
        image_size=224,
    )
    with torch.device("meta"):
        return hf_clip.HFCLIPVisionBackbone(CLIPVisionModel(config))
