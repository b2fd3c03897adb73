"""Shared machinery of merging Pareto set models: merged parameters per preference, functional forward, unloading."""

from __future__ import annotations

import copy
import logging
import re
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from mooframe.merging import add_weighted, add_weighted_experts, stack_task_vectors, task_arithmetic, task_vectors
from mooframe.merging.lowrank import LowRankTaskVectors, RankLike, check_rank, product_svd, truncated_svd
from mooframe.merging.store import ExpertState
from mooframe.pareto_set import FunctionalModel, ParetoSetModel
from mooframe.preferences import PreferenceLike, check_preference
from mooframe.problem import Problem
from mooframe.problems.merging import MergingProblem

logger = logging.getLogger(__name__)

VECTOR_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def require_merging_problem(problem: Problem, model: str) -> MergingProblem:
    """`problem` itself if it is a MergingProblem; otherwise a ValueError saying that `model` needs one."""
    if not isinstance(problem, MergingProblem):
        raise ValueError(f"{model} merges fine-tuned experts and needs a MergingProblem, got {type(problem).__name__}")
    return problem


class TensorDict(nn.Module):
    """Named tensors (names may contain dots) held as non-persistent buffers, so that `.to()` moves them."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self._index = {name: i for i, name in enumerate(tensors)}
        for i, tensor in enumerate(tensors.values()):
            self.register_buffer(f"t{i}", tensor, persistent=False)

    def __getitem__(self, name: str) -> torch.Tensor:
        return getattr(self, f"t{self._index[name]}")

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        return ((name, self[name]) for name in self._index)


class MergingModel(ParetoSetModel):
    """A Pareto set model whose solution for r is the problem's backbone run with merged parameters theta(r).

    `forward(r)` returns a `FunctionalModel` (no weights are copied into the module, gradients reach whatever
    produced theta(r)); `materialize(r)` writes theta(r) into a copy of the backbone: a plain module of the base
    architecture, with the same parameter names and count, and nothing of the merging machinery left.
    """

    def __init__(self, problem: Problem) -> None:
        super().__init__(require_merging_problem(problem, type(self).__name__))
        self.backbone = problem.pretrained
        self._problem = problem

    def pretrained_and_experts(self, name: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """theta_0[name] and theta_t[name] for each expert: the problem's own tensors (following `problem.to()`),
        read when merging and never copied."""
        return self.backbone.get_parameter(name).detach(), [state[name] for state in self._problem.expert_states]

    @abstractmethod
    def merged_parameters(self, pref: torch.Tensor) -> dict[str, torch.Tensor]:
        """theta(r): every parameter of the backbone by name."""

    def forward(self, pref: torch.Tensor) -> FunctionalModel:
        return FunctionalModel(self.backbone, self.merged_parameters(pref))

    def materialize(self, pref: PreferenceLike) -> nn.Module:
        pref = check_preference(pref, self.n_objectives).to(self.device)
        with torch.no_grad():
            params = self.merged_parameters(pref)
            module = copy.deepcopy(self.backbone)
            for name, parameter in module.named_parameters():
                if name in params:  # the rest: the backbone's own (psi, once the problem's experts are released)
                    parameter.copy_(params[name])
        return module


class LinearMergingModel(MergingModel):
    """theta(r) = theta_0 + sum_t c_g(r)_t tau_t for the parameters of each group g; the rest merged once.

    Subclasses say which parameters are merged per preference (`groups`: parameter name -> group name) and give
    each group's coefficients c_g(r) in `coefficients`. The remaining parameters are merged once by task
    arithmetic, psi = psi_0 + lambda sum_t tau_t. How the grouped task vectors are held:

    - `task_vector_dtype="float32"`, `task_vector_rank=None`: not at all; the grouped parameters are merged from
      the pretrained model and the experts the problem holds, (1 - sum_t c_t) theta_0 + sum_t c_t theta_t;
    - "bfloat16": in a bfloat16 dictionary (2T bytes per grouped parameter), merged in the backbone's dtype;
    - `task_vector_rank=k` (an int) or `f` (a float in (0, 1]): the weights of the grouped `nn.Linear` layers as
      truncated SVDs of rank k, or of the smallest rank keeping a fraction f of each task vector's energy
      (exact, and cheap, for LoRA experts: `product_svd`), with U and V in `task_vector_dtype`; their linear
      layers merge in factored form (`mooframe.merging.lowrank`). `truncation_errors[name][t]` is the relative
      Frobenius error of task t's truncation. Other grouped parameters (biases, norms) stay as above.

    With `release_experts=True` the problem holds only what this model reads afterwards: its experts keep the
    grouped parameters that are not held low-rank, and the backbone's other parameters are overwritten with psi
    (`MergingProblem.release_experts`); the problem then serves this model alone.
    """

    def __init__(
        self,
        problem: Problem,
        groups: Mapping[str, str],
        scaling: float,
        task_vector_dtype: str = "float32",
        task_vector_rank: RankLike | None = None,
        release_experts: bool = False,
    ) -> None:
        super().__init__(problem)
        if task_vector_dtype not in VECTOR_DTYPES:
            raise ValueError(f"unknown task_vector_dtype {task_vector_dtype!r}; pass one of {', '.join(VECTOR_DTYPES)}")
        dtype = VECTOR_DTYPES[task_vector_dtype]
        rank = None if task_vector_rank is None else check_rank(task_vector_rank)
        theta_0, experts = problem.pretrained_state(), problem.expert_states
        self.groups = dict(groups)
        linear = {
            f"{n}.weight" if n else "weight" for n, m in self.backbone.named_modules() if isinstance(m, nn.Linear)
        }
        low_rank = [name for name in self.groups if name in linear] if rank is not None else []
        self.dense_names = [name for name in self.groups if name not in low_rank]
        self.low_rank_index = {name: i for i, name in enumerate(low_rank)}
        self.low_rank = nn.ModuleList(
            LowRankTaskVectors([_factors(state, theta_0[name], name, rank) for state in experts], dtype)
            for name in low_rank
        )
        self.truncation_errors = {name: self.low_rank[i].errors for name, i in self.low_rank_index.items()}
        self.vectors = None  # float32: merged from the problem's tensors, nothing stored
        if task_vector_dtype != "float32":
            base = {name: theta_0[name] for name in self.dense_names}
            taus = task_vectors(base, [{name: state[name] for name in base} for state in experts])
            self.vectors = TensorDict(stack_task_vectors(taus, dtype=dtype))
        else:
            for state in experts:
                state.hold(self.dense_names)  # read once (a file's tensors memory-mapped), not per step
        rest = {name: value for name, value in theta_0.items() if name not in self.groups}
        fixed = task_arithmetic(
            rest, task_vectors(rest, [{name: state[name] for name in rest} for state in experts]), scaling
        )
        if release_experts:
            keep = self.dense_names if self.vectors is None else []
            problem.release_experts(keep, fixed, by=type(self).__name__)
            fixed = {}  # the backbone holds psi now
        self.fixed = TensorDict(fixed)
        if low_rank:
            errors = [e for errors in self.truncation_errors.values() for e in errors]
            logger.info(
                "low-rank task vectors of %d matrices: ranks %d-%d, relative truncation error mean %.3g, max %.3g",
                len(low_rank), min(min(v.ranks) for v in self.low_rank), max(max(v.ranks) for v in self.low_rank),
                sum(errors) / len(errors), max(errors),
            )  # fmt: skip

    @abstractmethod
    def coefficients(self, pref: torch.Tensor) -> dict[str, torch.Tensor]:
        """c_g(r), shape (T,), for each group g."""

    def merged_parameters(self, pref: torch.Tensor) -> dict[str, torch.Tensor]:
        coefficients = self.coefficients(pref)
        merged = dict(self.fixed.items())
        for name, group in self.groups.items():
            if name in self.low_rank_index:
                base = self.backbone.get_parameter(name).detach()
                merged[name] = self.low_rank[self.low_rank_index[name]].merged(base, coefficients[group])
                continue
            if self.vectors is None:
                merged[name] = add_weighted_experts(*self.pretrained_and_experts(name), coefficients[group])
            else:
                theta_0 = self.backbone.get_parameter(name).detach()
                merged[name] = add_weighted(theta_0, self.vectors[name], coefficients[group])
        return merged


def _factors(
    state: ExpertState, theta_0: torch.Tensor, name: str, rank: RankLike
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Task vector `name` of one expert, truncated: from its exact low-rank factors where it has them."""
    factors = state.factors(name)
    if factors is not None:
        return product_svd(*factors, rank)
    return truncated_svd(state[name] - theta_0, rank)


def upscaled_modules(problem: MergingProblem, upscale: str | Sequence[str]) -> dict[str, list[str]]:
    """The backbone's modules whose names fully match one of the patterns, with their parameter names.

    `upscale` is a preset name of `problem.upscale_presets` or a list of regular expressions. A module inside
    an already selected one is not selected again.
    """
    if isinstance(upscale, str):
        if upscale not in problem.upscale_presets:
            known = ", ".join(problem.upscale_presets) or "none"
            raise ValueError(
                f"unknown up-scaling preset {upscale!r} (this problem's presets: {known}); "
                "pass a preset name or a list of module-name regular expressions"
            )
        upscale = problem.upscale_presets[upscale]
    try:
        patterns = [re.compile(pattern) for pattern in upscale]
    except re.error as error:
        raise ValueError(f"invalid module-name pattern in {list(upscale)}: {error}") from error
    selected: dict[str, list[str]] = {}
    claimed: set[str] = set()
    for name, module in problem.pretrained.named_modules():
        if not any(p.fullmatch(name) for p in patterns):
            continue
        params = [f"{name}.{p}" if name else p for p, _ in module.named_parameters()]
        params = [p for p in params if p not in claimed]
        if params:
            selected[name] = params
            claimed.update(params)
    if not selected:
        raise ValueError(
            f"the up-scaling patterns {list(upscale)} match no module with parameters; "
            f"the backbone's module names (<i>: any block index) are {module_name_shapes(problem.pretrained)}"
        )
    return selected


def module_name_shapes(module: nn.Module, limit: int = 60) -> list[str]:
    """`module`'s submodule names with block indices written <i>, each distinct shape once, at most `limit`."""
    shapes = dict.fromkeys(re.sub(r"\.\d+(?=\.|$)", ".<i>", name) for name, _ in module.named_modules() if name)
    return list(shapes)[:limit]
