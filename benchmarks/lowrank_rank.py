"""PWE-MoE (LS) on the digits demo with low-rank task vectors: the front's hypervolume against the rank.

Trains PWE-MoE as the demo does (two tasks, attention + MLP up-scaled, 1000 steps, lr 1e-2, Dirichlet alpha 0.2,
seed 0) with full-rank task vectors and with each up-scaled linear layer's task vectors truncated to rank k, and
to the smallest rank per matrix keeping 99% of its energy (`task_vector_rank=0.99`). Prints, for each, the
fraction of the task vectors' energy kept (over all truncated matrices and tasks), the store (entries held for
the up-scaled task vectors, as a fraction of full rank's) and the HV of the front at the demo's 11 preferences
(test errors), at the nadir of the full-rank and 99%-energy fronts pushed out by 10% of their range (the demo
report's rule, over the fronts compared) and at (1, 1); and the smallest uniform rank keeping 99% of the energy.

    PYTHONPATH=. python benchmarks/lowrank_rank.py [--ranks 1 2 4 8 16] [--steps 1000]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from mooframe.demo import ALPHA
from mooframe.indicators import hypervolume
from mooframe.models.pwe_moe import PWEMoE
from mooframe.problems.digits import DEFAULT_TASKS, MultiTaskDigits, torch_threads
from mooframe.report import evaluation_preferences
from mooframe.solve import solve

UPSCALE = "attention_mlp"


def spectra(problem: MultiTaskDigits) -> list[torch.Tensor]:
    """Singular values of every up-scaled linear weight's task vector, for each task."""
    model = PWEMoE(problem, upscale=UPSCALE, task_vector_rank=1.0)  # exact: ranks up to the matrix dimension
    return [vectors.s[vectors.task == t] for vectors in model.low_rank for t in range(problem.n_objectives)]


def energy_kept(singular_values: list[torch.Tensor], rank: int | float) -> float:
    """Fraction of sum_matrices sum_t ||tau||_F^2 kept by truncation to `rank`."""
    from mooframe.merging.lowrank import kept_rank

    total = sum(float(s.double().square().sum()) for s in singular_values)
    kept = sum(float(s[: kept_rank(s, rank)].double().square().sum()) for s in singular_values)
    return kept / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    problem = MultiTaskDigits(tasks=DEFAULT_TASKS[:2])
    values = spectra(problem)
    uniform = next(k for k in range(1, 1 + max(s.numel() for s in values)) if energy_kept(values, k) >= 0.99)
    print(f"digits, 2 tasks, {UPSCALE} up-scaled: smallest uniform rank keeping 99% of the energy: {uniform}")
    prefs = evaluation_preferences(problem.n_objectives, 11)
    settings: list[int | float | None] = [None, *sorted({*args.ranks, uniform}), 0.99]
    fronts, stores = {}, {}
    for rank in settings:
        with torch_threads(1):
            result = solve(problem, "pwe_moe", "ls", steps=args.steps, lr=1e-2, alpha=ALPHA, seed=args.seed,
                           progress=False, model_kwargs={"upscale": UPSCALE, "task_vector_rank": rank})  # fmt: skip
        model = result.model
        low_rank = sum(v.u.numel() + v.s.numel() + v.v.numel() for v in model.low_rank)
        full = sum(problem.pretrained.get_parameter(n).numel() for n in model.low_rank_index) * problem.n_objectives
        stores[rank] = low_rank / full if rank is not None else 1.0
        fronts[rank] = result.front(prefs, progress=False).objectives
    compared = [fronts[None], fronts[uniform], fronts[0.99]]  # full rank and the two 99%-energy truncations
    nadir, ideal = np.concatenate(compared).max(0), np.concatenate(compared).min(0)
    ref = nadir + 0.1 * (nadir - ideal)
    full_hv, full_unit = float(hypervolume(fronts[None], ref)), float(hypervolume(fronts[None], np.ones(2)))
    print(f"HV at the nadir of the full-rank and 99%-energy fronts + 10% of their range, {ref.round(4).tolist()}, "
          "and at (1, 1)")  # fmt: skip
    print(f"{'rank':>10s} {'energy kept':>12s} {'store':>8s} {'HV':>8s} {'HV/full':>8s} {'HV(1,1)':>8s} {'/full':>7s}")
    for rank, front in fronts.items():
        label = "full" if rank is None else (f"{rank:.0%} energy" if isinstance(rank, float) else str(rank))
        kept = 1.0 if rank is None else energy_kept(values, rank)
        hv, unit = float(hypervolume(front, ref)), float(hypervolume(front, np.ones(2)))
        print(
            f"{label:>10s} {kept:12.4f} {stores[rank]:8.3f} {hv:8.4f} {hv / full_hv:8.4f} {unit:8.4f} "
            f"{unit / full_unit:7.4f}"
        )


if __name__ == "__main__":
    main()
