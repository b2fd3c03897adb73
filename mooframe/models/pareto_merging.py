"""Pareto Merging (Chen & Kwok, "Pareto Merging: Multi-Objective Optimization for Preference-Aware Model Merging",
ICML 2025, arXiv 2408.12105): a preference-independent base merge plus a preference-dependent low-rank tensor."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mooframe.merging import add_weighted_experts, task_arithmetic, task_vectors, ties_merging
from mooframe.models.merging import MergingModel, TensorDict, upscaled_modules
from mooframe.problems.merging import MergingProblem

BASES = ("task_arithmetic", "ties", "adamerging")


class LowRankPreferenceTensor(nn.Module):
    """Delta(r) = G x1 A1 x2 A2 x3 (A3^T r): an (m, n) matrix that depends linearly on the preference r.

    A Tucker-style factorization with core G (p, q, s) and factors A1 (m, p), A2 (n, q), A3 (T, s), so that
    Delta(r) = A1 (sum_j c_j G[:, :, j]) A2^T with c = A3^T r. Parameters: p q s + m p + n q + T s.
    Initialization: G = 0 (the merged model starts at the base merge), A1 and A2 ~ N(0, 1/p) and N(0, 1/q),
    A3 = the (T, s) identity (with s = T each core slice starts as one task's direction).
    """

    def __init__(self, shape: tuple[int, int], n_objectives: int, rank: int, pref_rank: int) -> None:
        super().__init__()
        (m, n), (p, q, s) = shape, (min(rank, shape[0]), min(rank, shape[1]), pref_rank)
        self.core = nn.Parameter(torch.zeros(p, q, s))
        self.rows = nn.Parameter(torch.randn(m, p) / p**0.5)
        self.cols = nn.Parameter(torch.randn(n, q) / q**0.5)
        self.pref = nn.Parameter(torch.eye(n_objectives, s))

    def forward(self, pref: torch.Tensor) -> torch.Tensor:
        core = torch.einsum("pqs,s->pq", self.core, pref @ self.pref)
        return self.rows @ core @ self.cols.T


class ParetoMerging(MergingModel):
    """theta(r) = theta_base + [G x1 A1 x2 A2 x3 A3^T r per selected weight matrix] (Chen & Kwok, ICML 2025).

    The base theta_base is one preference-independent merge of the experts: task arithmetic
    theta_0 + lambda sum_t tau_t, TIES (trim to the top `top_k` of each task vector, elect signs, disjoint mean,
    scaled by lambda), or AdaMerging's layer-wise coefficients theta_0 + sum_t lambda_{l,t} tau_{t,l} (one per
    parameter tensor l and task t, learned, initialized to lambda). Only the low-rank tensors (and the AdaMerging
    coefficients) are trained.

    Args:
        problem: a `MergingProblem` (pretrained backbone, T experts).
        base: "task_arithmetic", "ties" or "adamerging".
        scaling: lambda of task arithmetic and TIES, and the initial AdaMerging coefficient.
        top_k: fraction of each task vector TIES keeps (by magnitude).
        rank: p = q, the ranks of the weight's two dimensions (capped by the dimension); 0 keeps the base merge
            alone (the baselines: task arithmetic, TIES, or AdaMerging with its coefficients trained).
        pref_rank: s, the rank of the preference dimension (default T).
        layers: which `nn.Linear` weights get a low-rank tensor: "all", or those inside the modules a preset name
            of the problem's `upscale_presets` (e.g. "mlp") or a list of regular expressions (matched in full
            against module names) selects.
    """

    registry_name = "pareto_merging"

    def __init__(
        self,
        problem: MergingProblem,
        base: str = "task_arithmetic",
        scaling: float = 0.3,
        top_k: float = 0.2,
        rank: int = 16,
        pref_rank: int | None = None,
        layers: str | Sequence[str] = "all",
    ) -> None:
        super().__init__(problem)
        if base not in BASES:
            raise ValueError(f"unknown base merge {base!r}; known: {', '.join(BASES)}")
        if rank < 0 or (pref_rank is not None and pref_rank < 1):
            raise ValueError(
                f"rank must be >= 0 (0: the base merge alone) and pref_rank >= 1; got {rank=}, {pref_rank=}"
            )
        self.base, self.scaling, self.top_k, self.rank, self.pref_rank = base, scaling, top_k, rank, pref_rank
        self.layers = layers if isinstance(layers, str) else list(layers)
        theta_0 = problem.pretrained_state()
        if base == "adamerging":  # merged from the problem's own tensors each step: no task-vector copy
            self.merged_names = list(theta_0)  # the row order of the coefficients
            for state in problem.expert_states:
                state.hold(self.merged_names)  # read once (a file's tensors memory-mapped), not every step
            self.coefficients = nn.Parameter(torch.full((len(theta_0), self.n_objectives), float(scaling)))
        else:
            taus = task_vectors(theta_0, problem.expert_states)
            if base == "task_arithmetic":
                self.merged = TensorDict(task_arithmetic(theta_0, taus, scaling))
            else:
                self.merged = TensorDict(ties_merging(theta_0, taus, scaling, top_k))
        self.adapted = _adapted_weights(problem, layers) if rank else []
        if rank and not self.adapted:
            raise ValueError(f"layers={layers!r} selects no nn.Linear layer of {type(problem.pretrained).__name__}")
        s = pref_rank or self.n_objectives
        self.tensors = nn.ModuleList(
            LowRankPreferenceTensor(tuple(theta_0[name].shape), self.n_objectives, rank, s) for name in self.adapted
        ).to(next(iter(theta_0.values())))

    def base_parameters(self) -> dict[str, torch.Tensor]:
        """theta_base by name: the preference-independent merge (differentiable in the AdaMerging coefficients)."""
        if self.base != "adamerging":
            return dict(self.merged.items())
        return {
            name: add_weighted_experts(*self.pretrained_and_experts(name), self.coefficients[i])
            for i, name in enumerate(self.merged_names)
        }

    def solution_key(self, pref: torch.Tensor) -> str | None:
        return None if self.adapted else "base merge"  # without low-rank tensors the base merge is every solution

    def merged_parameters(self, pref: torch.Tensor) -> dict[str, torch.Tensor]:
        params = self.base_parameters()
        for name, tensor in zip(self.adapted, self.tensors, strict=True):
            params[name] = params[name] + tensor(pref.to(params[name]))
        return params


def _adapted_weights(problem: MergingProblem, layers: str | Sequence[str]) -> list[str]:
    """Names of the weights of the backbone's `nn.Linear` modules: all of them for "all", else those inside the
    modules `layers` selects (a preset name or regular expressions, as PWE-MoE's `upscale`)."""
    owned = dict(problem.pretrained.named_parameters())  # a tied weight (an LM's output head) is the embedding's
    linear = [
        f"{n}.weight" if n else "weight" for n, m in problem.pretrained.named_modules() if isinstance(m, nn.Linear)
    ]
    linear = [name for name in linear if name in owned]
    if layers == "all":
        return linear
    selected = {param for params in upscaled_modules(problem, layers).values() for param in params}
    return [name for name in linear if name in selected]
