"""Hypernetwork Pareto set learning (Lin et al., "Pareto Set Learning for Expensive Multi-Objective Optimization")."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from mooframe.pareto_set import ParetoSetModel
from mooframe.problem import Problem


class HypernetworkPSL(ParetoSetModel):
    """An MLP from the preference r to a decision vector in the problem's box: x(r) = xl + (xu - xl) sigmoid(MLP(r)).

    Works with any problem that exposes `bounds` (the synthetic problems). `solve()` trains it at lr 1e-3 unless
    told: at 1e-2 the front collapses on ZDT3 and under EPO on ZDT1 (HV against the true front's: docs/benchmarks.md).
    """

    registry_name = "hypernet"

    default_lr = 1e-3
    lower: torch.Tensor  # buffers, typed for the type checker
    span: torch.Tensor

    def __init__(self, problem: Problem, hidden: int = 256, n_layers: int = 2) -> None:
        super().__init__(problem)
        if not hasattr(problem, "bounds"):
            raise ValueError(
                f"hypernet needs a problem with box bounds on a decision vector; {type(problem).__name__} has none"
            )
        if hidden < 1 or n_layers < 1:
            raise ValueError(f"hidden and n_layers must be >= 1, got hidden={hidden}, n_layers={n_layers}")
        self.hidden, self.n_layers = hidden, n_layers
        lower, upper = problem.bounds
        self.register_buffer("lower", lower.clone().float())
        self.register_buffer("span", (upper - lower).clone().float())
        layers: list[nn.Module] = []
        width = problem.n_objectives
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, lower.numel()))
        self.net = nn.Sequential(*layers)

    def forward(self, pref: torch.Tensor) -> torch.Tensor:
        """x(r) for one preference (shape (T,)), or for a batch of K (shape (K, T): K decision vectors)."""
        return self.lower + self.span * torch.sigmoid(self.net(pref.to(self.lower)))

    def preference_losses(
        self, problem: Problem, prefs: torch.Tensor, batch: object
    ) -> Iterator[torch.Tensor | list[torch.Tensor]]:
        """The K preferences' losses in one block: one batched forward of the MLP and the problem's losses
        vectorized over the K decision vectors (torch.func.vmap: `problem.losses` must be written in torch ops, as
        the synthetic problems' are). One preference takes the unbatched path, exactly `losses(forward(r))`."""
        if len(prefs) == 1:
            yield from super().preference_losses(problem, prefs, batch)
            return
        yield torch.func.vmap(problem.losses, in_dims=(0, None))(self(prefs), batch)
