"""The PWE-MoE paper's merging baselines as Pareto set models: one merged model, the same at every preference.

Weight averaging, Fisher merging and RegMean merge the experts once, when built; the front of such a model is a
single point, evaluated by the same code as every other front. Fisher merging and RegMean read the training data
through `problem.batches(rng)` (each task's batch of each step) and the experts through `problem.expert_states`.
"""

from __future__ import annotations

import itertools
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mooframe.merging import weight_average
from mooframe.merging.fisher import FISHER_FLOOR, diagonal_fisher, fisher_merge
from mooframe.merging.regmean import input_grams, regmean_weight
from mooframe.models.merging import MergingModel, TensorDict, require_merging_problem
from mooframe.pareto_set import FunctionalModel
from mooframe.problem import Problem
from mooframe.problems.merging import MergingProblem


class FixedMerge(MergingModel):
    """A merged model theta* computed once (`merge`), returned for every preference; nothing is trained."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(require_merging_problem(problem, type(self).__name__))
        with torch.no_grad():
            self.merged = TensorDict(self.merge(problem))

    @abstractmethod
    def merge(self, problem: MergingProblem) -> dict[str, torch.Tensor]:
        """theta*: every parameter of the backbone by name."""

    def merged_parameters(self, pref: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(self.merged.items())

    def solution_key(self, pref: torch.Tensor) -> str:
        return "merged"  # one solution for every preference


class Pretrained(FixedMerge):
    """theta* = theta_0: the pretrained model as a row of the tables."""

    registry_name = "pretrained"

    def merge(self, problem: MergingProblem) -> dict[str, torch.Tensor]:
        return problem.pretrained_state()


class WeightAveraging(FixedMerge):
    """theta* = (1/T) sum_t theta_t (the paper's "Weight Averaging" / "Simple Average")."""

    registry_name = "weight_average"

    def merge(self, problem: MergingProblem) -> dict[str, torch.Tensor]:
        return weight_average(problem.expert_states)


class FisherMerging(FixedMerge):
    """theta* = sum_t F_t theta_t / sum_t F_t, F_t the diagonal empirical Fisher of expert t on its own task.

    F_t is the mean squared per-example gradient of the cross-entropy of expert t (its parameters in the shared
    backbone, task t's head) over `batches` training batches of task t (`problem.batch_size` examples each, drawn
    with `seed`); entries are floored at `floor` (Matena & Raffel, 2022).
    """

    registry_name = "fisher_merging"

    def __init__(self, problem: Problem, batches: int = 8, floor: float = FISHER_FLOOR, seed: int = 0) -> None:
        if batches < 1:
            raise ValueError(f"batches must be >= 1 (training batches per task for the Fisher), got {batches}")
        self.batches, self.floor, self.seed = batches, floor, seed
        super().__init__(problem)

    def merge(self, problem: MergingProblem) -> dict[str, torch.Tensor]:
        data = task_batches(problem, self.batches, self.seed)
        fishers = []
        for task, state in enumerate(problem.expert_states):

            def example_loss(params: dict[str, torch.Tensor], inputs: Any, label: torch.Tensor, task=task) -> Any:
                logits = problem.logits(FunctionalModel(problem.pretrained, params), task, _one(inputs))
                return F.cross_entropy(logits.float(), label.reshape(1).to(logits.device))

            with torch.enable_grad():
                fishers.append(diagonal_fisher(example_loss, state, data[task]))
        return fisher_merge(problem.expert_states, fishers, self.floor)


class RegMean(FixedMerge):
    """RegMean on every linear layer of the backbone the forward calls (nn.Linear, and the Conv1D layers of
    transformers' GPT-2, which hold the transposed weight); every other parameter averaged.

    Layer l's merged weight is (sum_t G~_t)^{-1} sum_t G~_t W_t^T with G_t the mean x^T x of the inputs the layer
    sees in expert t on `batches` training batches of task t, G~ = alpha G + (1 - alpha) diag(G) (Jin et al., 2023).
    Biases, norms, embeddings and linear layers the forward does not call are averaged, as in the paper.
    """

    registry_name = "regmean"

    def __init__(self, problem: Problem, batches: int = 8, alpha: float = 0.9, seed: int = 0) -> None:
        if batches < 1:
            raise ValueError(f"batches must be >= 1 (training batches per task for the Gram matrices), got {batches}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha (RegMean's off-diagonal scaling) must be in [0, 1], got {alpha}")
        self.batches, self.alpha, self.seed = batches, alpha, seed
        super().__init__(problem)

    def merge(self, problem: MergingProblem) -> dict[str, torch.Tensor]:
        backbone = problem.pretrained
        layouts = {name: _weight_layout(module) for name, module in backbone.named_modules()}
        owned = dict(backbone.named_parameters())  # a tied weight (an LM's output head) is its owner's: averaged
        linear = [name for name, layout in layouts.items() if layout is not None and f"{name}.weight" in owned]
        data = task_batches(problem, self.batches, self.seed)
        grams = []
        for task, state in enumerate(problem.expert_states):
            solution = FunctionalModel(backbone, state)

            def run(task=task, solution=solution) -> None:
                for inputs, _ in data[task]:
                    problem.logits(solution, task, inputs)

            grams.append(input_grams(backbone, linear, run))
        merged = weight_average(problem.expert_states)
        for name in linear:
            if not all(name in g for g in grams):
                continue
            flip = layouts[name] == "in_out"
            weights = [state[f"{name}.weight"] for state in problem.expert_states]
            weights = [w.T for w in weights] if flip else weights
            means = [(g[name][0] / g[name][1]).to(weights[0].device) for g in grams]
            weight = regmean_weight(weights, means, self.alpha)
            merged[f"{name}.weight"] = weight.T.contiguous() if flip else weight
        return merged


def _weight_layout(module: nn.Module) -> str | None:
    """ "out_in" for nn.Linear (y = x W^T + b), "in_out" for transformers' Conv1D of GPT-2 (y = x W + b), else None."""
    if isinstance(module, nn.Linear):
        return "out_in"
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None and module.weight.dim() == 2:
        return "in_out"
    return None


def task_batches(problem: MergingProblem, n_batches: int, seed: int) -> list[list[tuple[Any, torch.Tensor]]]:
    """The first `n_batches` training batches of each task from `problem.batches` (one stream, drawn with `seed`)."""
    steps = list(itertools.islice(problem.batches(np.random.default_rng(seed)), n_batches))
    return [[step[task] for step in steps] for task in range(problem.n_objectives)]


def _one(inputs: Any) -> Any:
    """One example's inputs with a batch dimension of 1."""
    if isinstance(inputs, Mapping):
        return {key: value.unsqueeze(0) for key, value in inputs.items()}
    return inputs.unsqueeze(0)
