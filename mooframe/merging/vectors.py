"""Task vectors and their linear combinations: task arithmetic, weight averaging, the shared merge primitive."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

StateDict = Mapping[str, torch.Tensor]


def task_vectors(pretrained: StateDict, experts: Sequence[StateDict]) -> list[dict[str, torch.Tensor]]:
    """tau_t = theta_t - theta_0 for each expert (Ilharco et al., "Editing Models with Task Arithmetic", 2023)."""
    for t, expert in enumerate(experts):
        _check_same_names(pretrained, expert, f"expert {t}")
    return [{name: expert[name].detach() - base.detach() for name, base in pretrained.items()} for expert in experts]


def task_arithmetic(
    pretrained: StateDict, vectors: Sequence[StateDict], scaling: float | Sequence[float] | torch.Tensor = 0.3
) -> dict[str, torch.Tensor]:
    """theta = theta_0 + sum_t lambda_t tau_t; a scalar `scaling` is one lambda for all tasks.

    A tensor `scaling` of shape (T,) may require grad: the result is differentiable in it.
    """
    coefficients = _coefficients(scaling, len(vectors), "scaling")
    for t, vector in enumerate(vectors):
        _check_same_names(pretrained, vector, f"task vector {t}")
    return {
        name: base + sum(c * vector[name] for c, vector in zip(coefficients, vectors, strict=True))
        for name, base in pretrained.items()
    }


def weight_average(
    states: Sequence[StateDict], weights: Sequence[float] | torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """theta = sum_t w_t theta_t / sum_t w_t (uniform w by default: the "model soup" of Wortsman et al., 2022)."""
    if not states:
        raise ValueError("weight_average needs at least one state dict")
    coefficients = _coefficients(1.0 if weights is None else weights, len(states), "weights")
    if (coefficients < 0).any() or float(coefficients.sum()) <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {coefficients.tolist()}")
    coefficients = coefficients / coefficients.sum()
    for t, state in enumerate(states[1:], start=1):
        _check_same_names(states[0], state, f"state {t}")
    return {name: sum(c * state[name] for c, state in zip(coefficients, states, strict=True)) for name in states[0]}


def stack_task_vectors(
    vectors: Sequence[StateDict], names: Sequence[str] | None = None, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """The task-vector dictionary D_tau: name -> tensor of shape (T, *shape), optionally cast (e.g. to bfloat16)."""
    if not vectors:
        raise ValueError("stack_task_vectors needs at least one task vector")
    names = list(vectors[0]) if names is None else list(names)
    return {name: torch.stack([v[name].detach().to(dtype=dtype) for v in vectors]) for name in names}


def add_weighted(
    base: torch.Tensor, vectors: torch.Tensor | Sequence[torch.Tensor], coefficients: torch.Tensor
) -> torch.Tensor:
    """base + sum_t c_t vectors[t], in base's dtype: the merge step of the merging models.

    `vectors` is a stacked tensor of shape (T, *base.shape) or T tensors of base's shape; they may be stored in a
    lower precision (bfloat16): they are read on the fly, and autograd keeps references to them, not copies.
    """
    return _merge(base, vectors, coefficients, from_experts=False)


def add_weighted_experts(
    base: torch.Tensor, experts: Sequence[torch.Tensor], coefficients: torch.Tensor
) -> torch.Tensor:
    """theta_0 + sum_t c_t (theta_t - theta_0) = (1 - sum_t c_t) theta_0 + sum_t c_t theta_t, from the experts.

    The same merge as `add_weighted` with the task vectors tau_t = theta_t - theta_0, without storing them: the
    forward reads theta_0 and the experts (a few float32 rounding errors of |theta| apart from theta_0 + sum c tau),
    and the gradient in c_t, <theta_t - theta_0, dL/dtheta>, forms each difference exactly, one tensor at a time.
    Autograd keeps references to `base` and `experts`, not copies.
    """
    return _merge(base, experts, coefficients, from_experts=True)


def _merge(
    base: torch.Tensor, vectors: torch.Tensor | Sequence[torch.Tensor], coefficients: torch.Tensor, from_experts: bool
) -> torch.Tensor:
    vectors = list(vectors)
    if coefficients.shape != (len(vectors),) or any(v.shape != base.shape for v in vectors):
        shapes = [tuple(v.shape) for v in vectors[:3]]
        raise ValueError(
            f"cannot merge base {tuple(base.shape)} with {len(vectors)} tensors (shapes {shapes}, ...) and "
            f"coefficients {tuple(coefficients.shape)}: pass T tensors of the base's shape, or one (T, *shape) "
            "tensor, and T coefficients"
        )
    return _Merge.apply(base, coefficients, from_experts, *vectors)


class _Merge(torch.autograd.Function):
    @staticmethod
    def forward(ctx, base: torch.Tensor, coefficients: torch.Tensor, from_experts: bool, *vectors: torch.Tensor):
        ctx.from_experts = from_experts
        ctx.save_for_backward(base, coefficients, *vectors)  # references to the stored tensors, not copies
        weights = coefficients.to(base.dtype)
        merged = base * (1 - weights.sum()) if from_experts else base.clone()
        for weight, vector in zip(weights, vectors, strict=True):
            merged.addcmul_(vector, weight)  # in place, casting a lower-precision vector on the fly: no temporary
        return merged

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        base, coefficients, *vectors = ctx.saved_tensors
        weights = coefficients.to(grad.dtype)
        grad_base = grad_coefficients = None
        if ctx.needs_input_grad[0]:
            grad_base = grad * (1 - weights.sum()) if ctx.from_experts else grad
        if ctx.needs_input_grad[1]:
            flat = grad.flatten()
            taus = ((v - base if ctx.from_experts else v) for v in vectors)  # one at a time: no stacked copy
            grad_coefficients = torch.stack([torch.dot(tau.to(grad.dtype).flatten(), flat) for tau in taus])
            grad_coefficients = grad_coefficients.to(coefficients.dtype)
        grad_vectors = [
            (weight * grad).to(vector.dtype) if needed else None
            for weight, vector, needed in zip(weights, vectors, ctx.needs_input_grad[3:], strict=True)
        ]
        return grad_base, grad_coefficients, None, *grad_vectors


def _coefficients(values: float | Sequence[float] | torch.Tensor, n: int, what: str) -> torch.Tensor:
    """`values` as a tensor of shape (n,): a scalar is repeated, a sequence must have n entries."""
    tensor = torch.as_tensor(values, dtype=None if isinstance(values, torch.Tensor) else torch.float32)
    if tensor.dim() == 0:
        tensor = tensor.expand(n)
    if tensor.shape != (n,):
        raise ValueError(f"{what} must be a number or have one entry per task ({n}), got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor.detach()).all():
        raise ValueError(f"{what} contains NaN or inf: {tensor.tolist()}")
    return tensor


def _check_same_names(reference: StateDict, other: StateDict, what: str) -> None:
    missing, extra = sorted(set(reference) - set(other)), sorted(set(other) - set(reference))
    if missing or extra:
        raise ValueError(
            f"{what} does not have the pretrained model's parameter names: missing {missing[:3]}, "
            f"unexpected {extra[:3]}; pass state dicts of the same architecture"
        )
    for name, tensor in reference.items():
        if other[name].shape != tensor.shape:
            raise ValueError(
                f"{what}: parameter {name!r} has shape {tuple(other[name].shape)}, expected {tuple(tensor.shape)}"
            )
