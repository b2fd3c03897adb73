"""TIES-merging (Yadav et al., "TIES-Merging: Resolving Interference When Merging Models", NeurIPS 2023)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mooframe.merging.vectors import StateDict, _check_same_names, _coefficients


def trim_top_k(vectors: Sequence[StateDict], top_k: float = 0.2) -> list[dict[str, torch.Tensor]]:
    """Keep the `top_k` fraction of each task vector's entries with the largest magnitude (over all its
    parameters together, as in the paper), set the others to zero."""
    if not 0 < top_k <= 1:
        raise ValueError(f"top_k is the fraction of entries kept and must be in (0, 1], got {top_k}")
    trimmed = []
    for vector in vectors:
        magnitudes = torch.cat([v.detach().abs().flatten() for v in vector.values()])
        keep = max(1, math.ceil(top_k * magnitudes.numel()))
        threshold = magnitudes.kthvalue(magnitudes.numel() - keep + 1).values
        trimmed.append({name: torch.where(v.abs() >= threshold, v, torch.zeros_like(v)) for name, v in vector.items()})
    return trimmed


def disjoint_merge(
    trimmed: Sequence[StateDict], weights: float | Sequence[float] | torch.Tensor = 1.0
) -> dict[str, torch.Tensor]:
    """Elect a sign per entry and average the entries that agree with it.

    With u_t = w_t tau_t: gamma = sign(sum_t u_t), tau = sum_t u_t [sign(u_t) = gamma] / #{t: sign(u_t) = gamma}.
    Weights w_t >= 0 (default 1, plain TIES) let a preference weight the tasks; w_t = 0 leaves task t out.
    """
    coefficients = _coefficients(weights, len(trimmed), "weights")
    if (coefficients < 0).any():
        raise ValueError(f"TIES weights must be non-negative, got {coefficients.tolist()}")
    for t, vector in enumerate(trimmed[1:], start=1):
        _check_same_names(trimmed[0], vector, f"task vector {t}")
    merged = {}
    for name, reference in trimmed[0].items():
        stacked = torch.stack([v[name] for v in trimmed])
        weighted = coefficients.to(stacked).view(-1, *[1] * reference.dim()) * stacked
        signs = torch.sign(weighted)
        agree = (signs == torch.sign(weighted.sum(0))) & (signs != 0)
        merged[name] = (weighted * agree).sum(0) / agree.sum(0).clamp(min=1)
    return merged


def ties_merging(
    pretrained: StateDict,
    vectors: Sequence[StateDict],
    scaling: float = 0.3,
    top_k: float = 0.2,
    weights: float | Sequence[float] | torch.Tensor = 1.0,
) -> dict[str, torch.Tensor]:
    """theta = theta_0 + lambda * disjoint_merge(trim_top_k(tau, k), w): trim, elect sign, disjoint mean."""
    for t, vector in enumerate(vectors):
        _check_same_names(pretrained, vector, f"task vector {t}")
    merged = disjoint_merge(trim_top_k(vectors, top_k), weights)
    return {name: base + scaling * merged[name] for name, base in pretrained.items()}
