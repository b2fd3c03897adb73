"""The Solver interface: how the T losses become the weights of one update direction."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from mooframe.params import spec_of


class Solver(ABC):
    """Turns losses (and, if `needs_gram`, the Gram matrix of their gradients) into weights w of shape (T,).

    The update direction is sum_t w_t grad l_t. Scalarizations s(l) return their gradient ds/dl at the current
    losses, so a non-linear scalarization (Tchebycheff) and a gradient-aggregating method (EPO, MGDA) share
    one interface. Subclasses store constructor arguments as same-named attributes (see `mooframe.params`).
    """

    #: True when `weights` needs the T x T Gram matrix G G^T of the per-task gradients.
    needs_gram: bool = False
    #: the name the registry knows this class by (`mooframe list`); None for a class not registered.
    registry_name: ClassVar[str | None] = None
    #: constructor options that change how it runs, not what it computes: not part of a run's spec.
    runtime_options: ClassVar[tuple[str, ...]] = ()

    def reset(self, n_objectives: int) -> None:
        """Prepare for a run with T objectives (called once by `solve` before the first step)."""
        self.n_objectives = n_objectives

    @abstractmethod
    def weights(self, losses: torch.Tensor, pref: torch.Tensor, gram: torch.Tensor | None = None) -> torch.Tensor:
        """Weights w (shape (T,)) for the losses (detached, shape (T,)) at preference `pref` (shape (T,))."""

    def stats(self) -> dict[str, float]:
        """Counters worth keeping in the run history (e.g. how many LPs fell back); empty by default."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """State that must survive a checkpoint (e.g. a running ideal point); JSON-serializable."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def spec(self) -> dict[str, Any] | None:
        """How to rebuild this solver by name (`{"name", "kwargs"}`), or None if its class is not registered."""
        return spec_of(self)
