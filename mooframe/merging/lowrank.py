"""Low-rank task vectors and a linear-layer merge that never forms the d_out x d_in matrix.

A weight matrix's T task vectors are held as truncated SVDs tau_t ~ U_t S_t V_t^T (rank k_t each), or exactly
as LoRA products B_t A_t. With coefficients c (e.g. a router's output) the merged weight is
W(c) = W_0 + sum_t c_t U_t S_t V_t^T, and a linear layer computes

    y = x W(c)^T + b = x W_0^T + b + sum_t c_t (x V_t) (S_t U_t^T),

which costs O(n sum_t k_t (d_in + d_out)) beyond the base layer, and whose gradient in c,
dL/dc_t = sum_i <(x_i V_t) S_t, g_i U_t> (g = dL/dy), needs no d_out x d_in weight gradient either.
`LowRankMergedWeight` carries W(c) in this form through `torch.func.functional_call`: `F.linear` takes the
factored path, any other use of the weight (e.g. writing it into a module) sees the dense W(c).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_map

RankLike = int | float


def check_rank(rank: RankLike) -> RankLike:
    """`rank` itself if it is an int >= 1 (a rank) or a float in (0, 1] (an energy fraction); else ValueError."""
    if isinstance(rank, bool) or not (
        (isinstance(rank, int) and rank >= 1) or (isinstance(rank, float) and 0 < rank <= 1)
    ):
        raise ValueError(
            f"task_vector_rank must be an int >= 1 (the rank k) or a float in (0, 1] (the fraction of each task "
            f"vector's energy ||tau||_F^2 to keep), got {rank!r}"
        )
    return rank


def kept_rank(singular_values: torch.Tensor, rank: RankLike) -> int:
    """k: `rank` itself (capped at the number of singular values) for an int; for a fraction f, the smallest k
    with sum_{i<k} s_i^2 >= f sum_i s_i^2."""
    if isinstance(rank, int):
        return min(rank, singular_values.numel())
    energy = singular_values.double().square().cumsum(0)
    if float(energy[-1]) == 0:
        return 1
    return int(torch.searchsorted(energy, rank * energy[-1] * (1 - 1e-12))) + 1


def truncated_svd(matrix: torch.Tensor, rank: RankLike) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """U (m, k), S (k,), V (n, k) of the best rank-k approximation U diag(S) V^T of `matrix` (Eckart-Young), and
    its relative error ||M - U S V^T||_F / ||M||_F = sqrt(sum_{i>=k} s_i^2 / sum_i s_i^2) (0 for M = 0)."""
    u, s, vh = torch.linalg.svd(matrix.detach().float(), full_matrices=False)
    return _truncate(u, s, vh.T, rank)


def product_svd(
    b: torch.Tensor, a: torch.Tensor, rank: RankLike
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """`truncated_svd` of B A (B: (m, r), A: (r, n)) without forming it: B = Q_b R_b, A^T = Q_a R_a, and the SVD of
    the r x r core R_b R_a^T = u s v^T gives B A = (Q_b u) s (Q_a v)^T exactly."""
    q_b, r_b = torch.linalg.qr(b.detach().float())
    q_a, r_a = torch.linalg.qr(a.detach().float().T)
    u, s, vh = torch.linalg.svd(r_b @ r_a.T)
    return _truncate(q_b @ u, s, q_a @ vh.T, rank)


def _truncate(
    u: torch.Tensor, s: torch.Tensor, v: torch.Tensor, rank: RankLike
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    k = kept_rank(s, rank)
    total = float(s.double().square().sum())
    error = (float(s[k:].double().square().sum()) / total) ** 0.5 if total > 0 else 0.0
    return u[:, :k], s[:k], v[:, :k], error


class LowRankTaskVectors(nn.Module):
    """The T task vectors of one (d_out, d_in) weight as factors U (d_out, K), S (K,), V (d_in, K), K = sum_t k_t.

    Column j belongs to task `task[j]`; U and V are stored in `dtype` (float32 or bfloat16), S in float32.
    `errors[t]` is the relative Frobenius error of task t's truncation. Storage: K (d_out + d_in) entries.
    """

    u: torch.Tensor  # buffers, typed for the type checker (nn.Module's __getattr__ returns Tensor | Module)
    s: torch.Tensor
    v: torch.Tensor
    task: torch.Tensor

    def __init__(self, factors: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]], dtype: torch.dtype):
        super().__init__()
        self.register_buffer("u", torch.cat([u for u, _, _, _ in factors], 1).to(dtype), persistent=False)
        self.register_buffer("s", torch.cat([s for _, s, _, _ in factors]).float(), persistent=False)
        self.register_buffer("v", torch.cat([v for _, _, v, _ in factors], 1).to(dtype), persistent=False)
        task = [torch.full((s.numel(),), t, dtype=torch.long) for t, (_, s, _, _) in enumerate(factors)]
        self.register_buffer("task", torch.cat(task), persistent=False)
        self.ranks = [s.numel() for _, s, _, _ in factors]
        self.errors = [error for *_, error in factors]

    def column_scales(self, coefficients: torch.Tensor) -> torch.Tensor:
        """c_task[j] s_j for each column j, shape (K,): differentiable in the coefficients."""
        return coefficients[self.task].to(self.s.dtype) * self.s

    def merged(self, base: torch.Tensor, coefficients: torch.Tensor) -> LowRankMergedWeight:
        """W(c) = base + sum_t c_t U_t S_t V_t^T, held in factored form."""
        return LowRankMergedWeight.build(base, self, coefficients)


class LowRankMergedWeight(torch.Tensor):
    """W(c) = W_0 + U diag(c_task s) V^T as a tensor of W_0's shape whose `F.linear` never forms it (module docstring).

    Any other operation on it computes the dense W(c) first (differentiably), so it can stand in for a weight
    wherever a tensor is expected.
    """

    vectors: LowRankTaskVectors
    coefficients: torch.Tensor

    @classmethod
    def build(cls, base: torch.Tensor, vectors: LowRankTaskVectors, coefficients: torch.Tensor) -> LowRankMergedWeight:
        weight = base.detach().as_subclass(cls)
        weight.vectors, weight.coefficients = vectors, coefficients
        return weight

    def base(self) -> torch.Tensor:
        """W_0 as a plain tensor (the same storage)."""
        with torch._C.DisableTorchFunctionSubclass():
            return self.as_subclass(torch.Tensor)

    def dense(self) -> torch.Tensor:
        """W(c) as a plain (d_out, d_in) tensor, differentiable in the coefficients."""
        base = self.base()
        scales = self.vectors.column_scales(self.coefficients).to(base.dtype)
        return torch.addmm(base, self.vectors.u.to(base.dtype) * scales, self.vectors.v.to(base.dtype).T)

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x W(c)^T + bias = x W_0^T + bias + ((x V) diag(c_task s)) U^T."""
        base = self.base()
        dtype = x.dtype if x.is_floating_point() else base.dtype
        low = (x @ self.vectors.v.to(dtype)) * self.vectors.column_scales(self.coefficients).to(dtype)
        return F.linear(x, base, bias) + low @ self.vectors.u.to(dtype).T

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight, bias = _linear_arguments(args, kwargs)
            if isinstance(weight, cls) and not isinstance(x, cls) and not isinstance(bias, cls):
                return weight.linear(x, bias)
        if func in _METADATA:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        args, kwargs = tree_map(lambda t: t.dense() if isinstance(t, cls) else t, (args, kwargs))
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)


def _linear_arguments(args: tuple, kwargs: dict) -> tuple[Any, Any, Any]:
    values = {**dict(zip(("input", "weight", "bias"), args, strict=False)), **kwargs}
    return values["input"], values["weight"], values.get("bias")


_PROPERTIES = ("shape", "dtype", "device", "layout", "requires_grad", "is_cuda", "ndim", "is_sparse")
#: tensor attributes that read only shape, dtype, device or layout: answered from W_0 without densifying
_METADATA = frozenset(
    [getattr(torch.Tensor, name).__get__ for name in _PROPERTIES]
    + [
        torch.Tensor.size,
        torch.Tensor.dim,
        torch.Tensor.numel,
        torch.Tensor.element_size,
        torch.Tensor.is_floating_point,
        torch.Tensor.data_ptr,
    ]  # fmt: skip
)
