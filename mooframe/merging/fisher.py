"""Fisher merging (Matena & Raffel, "Merging Models with Fisher-Weighted Averaging", NeurIPS 2022)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch.func import grad, vmap

from mooframe.merging.vectors import StateDict, _check_same_names

#: Fisher values are floored here before weighting, so that an entry no example moved still gets a weight.
FISHER_FLOOR = 1e-6


def diagonal_fisher(
    example_loss: Callable[[dict[str, torch.Tensor], Any, torch.Tensor], torch.Tensor],
    params: Mapping[str, torch.Tensor],
    batches: Iterable[tuple[Any, torch.Tensor]],
    chunk_size: int = 4,
) -> dict[str, torch.Tensor]:
    """F = mean over examples i of (d l_i / d theta)^2, the diagonal empirical Fisher at `params`.

    `example_loss(params, inputs, label)` is one example's negative log-likelihood (inputs and label without a
    batch dimension); per-example gradients come from `torch.func.vmap(grad(...))`, `chunk_size` examples at a
    time (the per-example gradients of a chunk are held at once: chunk_size copies of the parameters). A model
    vmap cannot trace (data-dependent control flow, e.g. transformers' GPT-2 attention mask) gets the same
    gradients from `grad` one example at a time.
    """
    params = {name: value.detach() for name, value in params.items()}
    example_grad = grad(example_loss)
    batched = vmap(example_grad, in_dims=(None, 0, 0), chunk_size=chunk_size)

    def looped(params: dict[str, torch.Tensor], inputs: Any, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        grads = [example_grad(params, _rows(inputs, i, 1, squeeze=True), labels[i]) for i in range(len(labels))]
        return {name: torch.stack([g[name] for g in grads]) for name in params}

    per_example = batched
    fisher = {name: torch.zeros_like(value, dtype=torch.float32) for name, value in params.items()}
    count = 0
    for inputs, labels in batches:
        for start in range(0, len(labels), chunk_size):
            chunk, chunk_labels = _rows(inputs, start, chunk_size), labels[start : start + chunk_size]
            try:
                with warnings.catch_warnings():  # torch says some backward ops run unbatched; the result is the same
                    warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet")
                    grads = per_example(params, chunk, chunk_labels)
            except RuntimeError as error:
                if per_example is looped or "vmap" not in str(error):
                    raise
                per_example = looped
                grads = per_example(params, chunk, chunk_labels)
            for name, value in grads.items():
                fisher[name] += value.float().pow(2).sum(0)
            count += len(chunk_labels)
    if count == 0:
        raise ValueError("diagonal_fisher got no examples; pass at least one batch")
    return {name: value / count for name, value in fisher.items()}


def fisher_merge(
    states: Sequence[StateDict], fishers: Sequence[StateDict], floor: float = FISHER_FLOOR
) -> dict[str, torch.Tensor]:
    """theta = sum_t F_t theta_t / sum_t F_t per entry, with each F_t floored at `floor`."""
    if not states or len(states) != len(fishers):
        raise ValueError(f"fisher_merge needs one Fisher per state, got {len(states)} states and {len(fishers)}")
    for t in range(len(states)):
        _check_same_names(states[0], states[t], f"state {t}")
        _check_same_names(states[0], fishers[t], f"Fisher {t}")
    merged = {}
    for name, reference in states[0].items():
        weights = [f[name].to(reference.device, torch.float32).clamp(min=floor) for f in fishers]
        total = sum(w * s[name].float() for w, s in zip(weights, states, strict=True))
        merged[name] = (total / sum(weights)).to(reference.dtype)
    return merged


def _rows(inputs: Any, start: int, size: int, squeeze: bool = False) -> Any:
    """Rows start .. start + size of a batch (a tensor or a dict of tensors); with `squeeze`, the one row itself."""
    if isinstance(inputs, Mapping):
        return {key: _rows(value, start, size, squeeze) for key, value in inputs.items()}
    return inputs[start] if squeeze else inputs[start : start + size]
