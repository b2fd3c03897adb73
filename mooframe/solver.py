"""The Solver interface: how the T losses become the weights of one update direction."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from mooframe.params import spec_of
from mooframe.preferences import check_preference


class Solver(ABC):
    """Turns losses (and, if `needs_gram`, the Gram matrix of their gradients) into weights w of shape (T,).

    The update direction is sum_t w_t grad l_t. Scalarizations s(l) return their gradient ds/dl at the current
    losses, so a non-linear scalarization (Tchebycheff) and a gradient-aggregating method (EPO, MGDA) share
    one interface. A solver implements `_weights`; the public `weights` checks what goes in (losses, preference,
    Gram matrix) and what comes out (shape, finite values, the guarantees the class declares). Subclasses store
    constructor arguments as same-named attributes (see `mooframe.params`).
    """

    #: True when `weights` needs the T x T Gram matrix G G^T of the per-task gradients.
    needs_gram: ClassVar[bool] = False
    #: True when the solver is defined for non-negative losses only (EPO balances r * l on a log scale).
    needs_nonnegative_losses: ClassVar[bool] = False
    #: True when the weights are guaranteed >= 0 (checked on every call).
    nonnegative_weights: ClassVar[bool] = False
    #: the name the registry knows this class by (`mooframe list`); None for a class not registered.
    registry_name: ClassVar[str | None] = None
    #: constructor options that change how it runs, not what it computes: not part of a run's spec.
    runtime_options: ClassVar[tuple[str, ...]] = ()

    def reset(self, n_objectives: int) -> None:
        """Prepare for a run with T objectives (called once by `solve` before the first step)."""
        self.n_objectives = n_objectives

    def weights(self, losses: torch.Tensor, pref: torch.Tensor, gram: torch.Tensor | None = None) -> torch.Tensor:
        """Weights w (shape (T,)) for the losses (shape (T,)) at preference `pref` (shape (T,), on the simplex).

        ValueError naming the solver for inputs it is not defined for: losses of another shape than the run's T,
        non-finite (or, where the solver needs them non-negative, negative) losses, a preference off the simplex,
        a missing, mis-shaped or non-finite Gram matrix (a gradient diverged upstream). The Gram matrix reaches
        `_weights` symmetrized, in float64 on the CPU. RuntimeError when `_weights` breaks its own contract.
        """
        name = type(self).__name__
        n = _checked_count(losses, getattr(self, "n_objectives", None), name, self.needs_nonnegative_losses)
        check_preference(pref, n)
        if self.needs_gram:
            gram = _checked_gram(gram, n, name)
        weights = torch.as_tensor(self._weights(losses.detach(), pref.detach(), gram))
        _check_weights(weights, n, name, self.nonnegative_weights)
        return weights

    @abstractmethod
    def _weights(self, losses: torch.Tensor, pref: torch.Tensor, gram: torch.Tensor | None) -> torch.Tensor:
        """The weights for checked inputs: detached losses (T,), a preference on the simplex (T,), and when
        `needs_gram` the symmetric float64 Gram matrix (T, T) (else whatever was passed, usually None)."""

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


def _checked_gram(gram: torch.Tensor | None, n: int, name: str) -> torch.Tensor:
    """G G^T as a symmetric float64 CPU tensor, after checking it is there, T x T and finite."""
    if gram is None:
        raise ValueError(f"{name} needs the Gram matrix of the task gradients: pass gram=G @ G.T (solve() does)")
    values = torch.as_tensor(gram).detach().to("cpu", torch.float64)
    if values.shape != (n, n):
        raise ValueError(
            f"{name} got a Gram matrix of shape {tuple(values.shape)} for {n} losses; pass the {n} x {n} matrix G @ G.T"
        )
    if not torch.isfinite(values).all():
        raise ValueError(
            f"{name} got a Gram matrix with NaN or inf entries: a task gradient is not finite "
            "(lower the learning rate or check the losses)"
        )
    return (values + values.T) / 2


def _check_weights(weights: torch.Tensor, n: int, name: str, nonnegative: bool) -> None:
    """RuntimeError when `_weights` returned other than T finite weights, or a negative one where it promised none."""
    if weights.shape != (n,) or not weights.is_floating_point():
        raise RuntimeError(
            f"{name}._weights returned {weights.dtype} weights of shape {tuple(weights.shape)}, not ({n},)"
        )
    if not torch.isfinite(weights).all():
        raise RuntimeError(f"{name}._weights returned non-finite weights {weights.tolist()}")
    if nonnegative and (weights < 0).any():
        raise RuntimeError(f"{name}._weights returned negative weights {weights.tolist()}; it promises w >= 0")


def _checked_count(losses: torch.Tensor, expected: int | None, name: str, nonnegative: bool) -> int:
    """T, the number of losses, after checking they are a 1-d float tensor of T finite (non-negative) values."""
    if not isinstance(losses, torch.Tensor) or losses.ndim != 1 or not losses.is_floating_point():
        shown = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ValueError(f"{name} takes the T losses as a 1-d float tensor, got {shown}")
    n = losses.numel()
    if expected is not None and n != expected:
        raise ValueError(f"{name} was reset for {expected} objectives but got {n} losses")
    values = losses.detach()
    if not torch.isfinite(values).all():
        raise ValueError(f"{name} got non-finite losses {values.tolist()}: a loss diverged upstream")
    if nonnegative and (values < 0).any():
        raise ValueError(f"{name} needs non-negative losses (it balances r * l on a log scale); got {values.tolist()}")
    return n
