"""Frozen parts in bfloat16 vs float32 on a real-size CLIP ViT-B/32 merging problem (random weights, no downloads).

Measures, side by side in one run on one device: the bytes held by the frozen parts (pretrained model + T experts
+ heads) and the time of one training step (merge for a preference, T task losses, backward to the merging
weights). Prints bfloat16 / float32 ratios.

    PYTHONPATH=. python benchmarks/frozen_precision.py --tasks 2 --batch 4 --steps 3 [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset
from transformers import CLIPVisionConfig, CLIPVisionModel

from mooframe.adapters.hf_clip import HFCLIPVisionBackbone
from mooframe.adapters.zero_shot import ZeroShotHead
from mooframe.pareto_set import FunctionalModel
from mooframe.problems.pretrained import PretrainedMergingProblem


def build(n_tasks: int, batch: int, precision: str, device: str) -> PretrainedMergingProblem:
    torch.manual_seed(0)
    pretrained = HFCLIPVisionBackbone(CLIPVisionModel(CLIPVisionConfig()))  # the ViT-B/32 geometry
    theta0 = {k: v.detach() for k, v in pretrained.named_parameters()}
    experts = [{k: v + 1e-3 * torch.randn_like(v) for k, v in theta0.items()} for _ in range(n_tasks)]
    heads = [
        ZeroShotHead(nn.functional.normalize(torch.randn(10, 512), dim=-1), 100.0, torch.randn(512, 768))
        for _ in range(n_tasks)
    ]
    data = [
        TensorDataset(torch.randn(4 * batch, 3, 224, 224), torch.randint(0, 10, (4 * batch,))) for _ in range(n_tasks)
    ]
    problem = PretrainedMergingProblem(pretrained, experts, heads, data, batch_size=batch)
    problem.set_precision(precision)
    return problem.to(device)


def frozen_bytes(problem: PretrainedMergingProblem) -> int:
    tensors = [*problem.pretrained.parameters(), *problem.heads.buffers()]
    tensors += [v for state in problem.expert_states for v in state.values()]
    return sum(t.numel() * t.element_size() for t in tensors)


def step_seconds(problem: PretrainedMergingProblem, steps: int) -> float:
    """Median time of: merge theta0 + sum_t w_t tau_t, T losses, backward to w."""
    theta0 = problem.pretrained_state()
    taus = [{k: v - theta0[k] for k, v in state.items()} for state in problem.expert_states]
    weights = torch.full((problem.n_objectives,), 0.3, device=problem.device, requires_grad=True)
    batches = problem.batches(np.random.default_rng(0))
    times = []
    for _ in range(steps + 1):  # the first step warms up
        if problem.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        params = {k: v + sum(w * tau[k] for w, tau in zip(weights, taus, strict=True)) for k, v in theta0.items()}
        problem.losses(FunctionalModel(problem.pretrained, params), next(batches)).sum().backward()
        if problem.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    results = {}
    for precision in ("float32", "bfloat16"):
        problem = build(args.tasks, args.batch, precision, args.device)
        results[precision] = (frozen_bytes(problem), step_seconds(problem, args.steps))
        del problem
    (bytes32, time32), (bytes16, time16) = results["float32"], results["bfloat16"]
    print(f"ViT-B/32, T={args.tasks}, batch {args.batch} per task, device {args.device}")
    mib = f"{bytes16 / 2**20:.0f} / {bytes32 / 2**20:.0f} MiB"
    print(f"frozen-part memory bfloat16/float32: {bytes16 / bytes32:.3f} ({mib})")
    print(f"step time          bfloat16/float32: {time16 / time32:.2f}")


if __name__ == "__main__":
    main()
