"""Per-task gradients and the Gram matrix: what Gram-based solvers (EPO, MGDA, ...) need from a step.

For T losses l_t of trainable parameters theta, row t of the T x P matrix G is grad l_t (flattened over the
parameters some loss reaches); a Gram-based solver reads G G^T and returns weights w, and the update direction
is w^T G, written into the parameters' `.grad`.
"""

from __future__ import annotations

import torch
from torch.autograd.graph import GradientEdge


def per_task_gradients(
    losses: torch.Tensor, params: list[torch.nn.Parameter]
) -> tuple[torch.Tensor, list[torch.nn.Parameter]]:
    """The T x P matrix whose row t is the gradient of loss t, flattened, over the parameters some loss reaches.

    Returns the matrix and those parameters (in order); parameters no loss depends on get no column. The graph is
    retained (the caller may differentiate the losses again).
    """
    per_task: list[tuple[torch.Tensor | None, ...]] = []
    for output in _task_outputs(losses):
        grads: tuple[torch.Tensor | None, ...] = (None,) * len(params)
        if output is not None:
            seed = torch.ones((), dtype=losses.dtype, device=losses.device)
            grads = torch.autograd.grad(output, params, seed, retain_graph=True, allow_unused=True)
        per_task.append(grads)
    reached = [i for i in range(len(params)) if any(grads[i] is not None for grads in per_task)]
    rows = [
        torch.cat([_or_zeros(g[i], params[i]).flatten() for i in reached]) if reached else losses.new_zeros(0)
        for g in per_task
    ]
    return torch.stack(rows), [params[i] for i in reached]


def _or_zeros(grad: torch.Tensor | None, param: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(param) if grad is None else grad


def _task_outputs(losses: torch.Tensor) -> list[torch.Tensor | GradientEdge | None]:
    """Each loss as an autograd output; None for a loss that depends on no trainable tensor.

    When `losses` is a torch.stack of per-task scalars (as problems build it), task t's output is the stack's
    input t: differentiating `losses[t]` would run every task's backward, all but one with zero gradients.
    """
    node = losses.grad_fn
    if node is not None and node.name() == "StackBackward0" and len(node.next_functions) == losses.numel():
        return [GradientEdge(child, nr) if child is not None else None for child, nr in node.next_functions]
    return [losses[t] if losses.requires_grad else None for t in range(losses.numel())]


def gram_matrix(grads: torch.Tensor) -> torch.Tensor:
    """G G^T: the T x T inner products of the per-task gradients (the rows of `grads`)."""
    return grads @ grads.T


def add_flat_gradient(params: list[torch.nn.Parameter], flat: torch.Tensor) -> None:
    """Add a flat gradient vector to the `.grad` of each parameter, in order (a `.grad` of None becomes the slice)."""
    offset = 0
    for p in params:
        piece = flat[offset : offset + p.numel()].view_as(p)
        p.grad = piece.clone() if p.grad is None else p.grad + piece
        offset += p.numel()
