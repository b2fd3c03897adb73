"""RegMean (Jin et al., "Dataless Knowledge Fusion by Merging Weights of Language Models", ICLR 2023).

For a linear layer y = x W^T + b fine-tuned on T tasks with inputs X_t, the merged W minimizes the joint regression
sum_t ||X_t W^T - X_t W_t^T||^2: W^T = (sum_t G_t)^{-1} sum_t G_t W_t^T with the Gram matrices G_t = X_t^T X_t.
The paper scales each G_t's off-diagonal entries by alpha (alpha = 1: the exact solution; alpha = 0: a weighted
mean of the W_t), which keeps the inverse well conditioned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


def scale_off_diagonal(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha G + (1 - alpha) diag(G)."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"RegMean's off-diagonal scaling alpha must be in [0, 1], got {alpha}")
    return alpha * gram + (1 - alpha) * torch.diag_embed(torch.diagonal(gram))


def regmean_weight(weights: Sequence[torch.Tensor], grams: Sequence[torch.Tensor], alpha: float = 0.9) -> torch.Tensor:
    """The merged weight (out, in) of one linear layer from the experts' weights and their inputs' Gram matrices."""
    if not weights or len(weights) != len(grams):
        raise ValueError(f"regmean_weight needs one Gram matrix per weight, got {len(weights)} and {len(grams)}")
    scaled = [scale_off_diagonal(g.double(), alpha) for g in grams]
    rhs = sum(g @ w.double().T for g, w in zip(scaled, weights, strict=True))
    merged = torch.linalg.lstsq(sum(scaled), rhs).solution.T  # lstsq: a singular sum (dead inputs) still solves
    return merged.to(weights[0].dtype)


def input_grams(model: nn.Module, names: Sequence[str], run: Callable[[], None]) -> dict[str, tuple[torch.Tensor, int]]:
    """(sum over rows of x^T x, rows) of the inputs that the linear layers `names` of `model` see while `run()`
    executes (every leading dimension, e.g. tokens, counts as rows). A layer that `run` never calls is left out
    (e.g. open_clip's attention `out_proj`, whose weight nn.MultiheadAttention reads without calling it)."""
    grams: dict[str, tuple[torch.Tensor, int]] = {}

    def hook(name: str) -> Callable:
        def record(module: nn.Module, args: tuple) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            gram, rows = grams.get(name, (0, 0))
            grams[name] = (gram + x.T @ x, rows + x.shape[0])

        return record

    handles = [model.get_submodule(name).register_forward_pre_hook(hook(name)) for name in names]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return grams
