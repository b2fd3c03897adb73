"""The ParetoSetModel interface: a trainable map from a preference vector to a solution."""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.func import functional_call

from mooframe.params import spec_of
from mooframe.preferences import PreferenceLike, check_preference
from mooframe.problem import Problem


@dataclass
class FunctionalModel:
    """`module` evaluated with the parameter dictionary `params` (torch.func.functional_call).

    This is how merging models hand a solution to a problem: the merged parameters stay tensors in the autograd
    graph (gradients flow to routers or low-rank factors) and nothing is copied into the module.
    """

    module: nn.Module
    params: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        self.params = dict(self.params)  # any mapping, e.g. a problem's `ExpertState`: functional_call takes dicts

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self.module, self.params, args, kwargs, strict=False)


class ParetoSetModel(nn.Module, ABC):
    """A trainable map r -> solution, for preferences r on the simplex.

    `forward(r)` returns a solution that `problem.losses` can differentiate through; `materialize(r)` returns a
    standalone solution (a detached tensor, or a plain `nn.Module` of the base architecture for merging models).
    Only `trainable_parameters()` are optimized and saved; everything else is rebuilt from the problem.
    Subclasses take the problem as first constructor argument and store the others as same-named attributes.
    """

    #: the name the registry knows this class by (`mooframe list`); None for a class not registered.
    registry_name: ClassVar[str | None] = None
    #: constructor options that change how it runs, not what it computes: not part of a run's spec.
    runtime_options: ClassVar[tuple[str, ...]] = ()
    #: learning rate `solve()` uses when not told (the PWE-MoE paper's)
    default_lr: float = 1e-2
    #: steps of linear learning-rate warm-up `solve()` uses when not told (at most a tenth of its steps)
    default_warmup_steps: int = 0

    def __init__(self, problem: Problem) -> None:
        super().__init__()
        self.n_objectives = problem.n_objectives

    @abstractmethod
    def forward(self, pref: torch.Tensor) -> Any:
        """The solution for preference `pref` (shape (T,)), differentiable in the trainable parameters."""

    def materialize(self, pref: PreferenceLike) -> Any:
        """A standalone solution for `pref`, with no trace of the preference-conditioning machinery."""
        pref = check_preference(pref, self.n_objectives)
        with torch.no_grad():
            solution = self(pref.to(self.device))
        return solution.detach() if isinstance(solution, torch.Tensor) else solution

    def solution_key(self, pref: torch.Tensor) -> Hashable | None:
        """A key shared by the preferences that give the same solution, so `front` evaluates it once; None: the
        solution for `pref` is its own (the default)."""
        return None

    def training_preference(self, sampled: torch.Tensor, step: int) -> torch.Tensor:
        """The preference trained at `step` (the index of the preference among all those trained: step K + k with K
        preferences a step): the sampled one, unless the model trains fixed rays (per_ray)."""
        return sampled

    def preference_losses(
        self, problem: Problem, prefs: torch.Tensor, batch: Any
    ) -> Iterator[torch.Tensor | list[torch.Tensor]]:
        """`problem.losses(self(r_k), batch)` for the K preferences `prefs` (shape (K, T)), in order, in blocks that
        share one graph: a (G, T) tensor, or a list of G losses of shape (T,).

        `solve` backpropagates each block once and releases its graph before asking for the next. The default is a
        loop, one preference per block (one solution's graph in memory at a time); a model that evaluates K
        preferences in one vectorized forward (the hypernetwork) yields them as a single block.
        """
        for pref in prefs:
            yield [problem.losses(self(pref), batch)]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the solver updates (all with requires_grad by default)."""
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Named trainable tensors: what a saved run stores (not frozen weights the problem can rebuild)."""
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load tensors written by `trainable_state`; names and shapes must match exactly."""
        own = dict(self.named_parameters())
        expected = {name for name, p in own.items() if p.requires_grad}
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(f"saved model state does not match: missing {missing[:5]}, unexpected {extra[:5]}")
        with torch.no_grad():
            for name, tensor in state.items():
                if own[name].shape != tensor.shape:
                    raise ValueError(
                        f"saved tensor {name!r} has shape {tuple(tensor.shape)}, model expects {tuple(own[name].shape)}"
                    )
                own[name].copy_(tensor)

    @property
    def device(self) -> torch.device:
        """Device of the model's tensors (CPU when it holds none)."""
        tensor = next(itertools.chain(self.parameters(), self.buffers()), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    def spec(self) -> dict[str, Any] | None:
        """How to rebuild this model by name (`{"name", "kwargs"}`), or None if its class is not registered."""
        return spec_of(self)
