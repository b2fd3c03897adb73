"""Adapters: everything architecture-specific (loading checkpoints, naming up-scalable modules, heads).

Models and solvers never import an adapter. An adapter hands a `MergingProblem` a `Backbone`: a module that
maps a task's inputs to features, wrapping the library's own model as `.model` so that a materialized solution
can be exported in its family's native format (`family` says which).
"""

from __future__ import annotations

from torch import nn


class Backbone(nn.Module):
    """A library model used as a feature extractor; `model` is the wrapped library model, `family` its kind."""

    family: str = "torch"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
