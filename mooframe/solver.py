"""The Solver interface: how the T losses become the weights of one update direction."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from mooframe.params import get_params


class Solver(ABC):
    """Turns losses (and, if `needs_gram`, the Gram matrix of their gradients) into weights w of shape (T,).

    The update direction is sum_t w_t grad l_t. Scalarizations s(l) return their gradient ds/dl at the current
    losses, so a non-linear scalarization (Tchebycheff) and a gradient-aggregating method (EPO, MGDA) share
    one interface. Subclasses store constructor arguments as same-named attributes (see `mooframe.params`).
    """

    #: True when `weights` needs the T x T Gram matrix G G^T of the per-task gradients.
    needs_gram: bool = False
    registry_name: str | None = None

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

    def spec(self) -> dict[str, Any]:
        """How to rebuild this solver (`{"name", "kwargs"}`)."""
        return {"name": self.registry_name or type(self).__name__, "kwargs": get_params(self)}
