"""Steps per second of `solve` on 1 vs 2 CPU processes (gloo), with the same global batch per task.

Each process runs `--threads` torch threads, so the comparison is the data-parallel speed-up at a fixed
per-process budget. CPU time per step per process is printed too: where the cores are busy with other work the
wall clock cannot show a speed-up, but the split work still shows. The problem is a synthetic merging problem
(an MLP backbone, T experts, linear heads); the model is the smallest merging Pareto set model (tests/toys.py),
whose cost is the merge plus T forward/backward passes.

    PYTHONPATH=. python benchmarks/ddp_scaling.py --steps 40 --batch 64 --width 256
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import TensorDataset

from mooframe.problems.merging import MergingProblem
from mooframe.solve import solve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from toys import RouterMerge  # noqa: E402


def merging_problem(width: int, depth: int, batch: int, n_tasks: int = 2) -> MergingProblem:
    """T tasks on random inputs; experts are the pretrained MLP plus noise (deterministic: seeded)."""
    generator = torch.Generator().manual_seed(0)

    def backbone() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), nn.GELU())])

    experts = []
    for _ in range(n_tasks):
        expert = backbone()
        with torch.no_grad():
            for p in expert.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
        experts.append(expert)
    heads = [nn.Linear(width, 10) for _ in range(n_tasks)]
    data = [
        TensorDataset(torch.randn(8 * batch, width, generator=generator), torch.randint(0, 10, (8 * batch,)))
        for _ in range(n_tasks)
    ]
    return MergingProblem(backbone(), experts, heads, data, batch_size=batch)


def _run(rank: int, world_size: int, init_file: str, args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        problem = merging_problem(args.width, args.depth, args.batch)
        torch.manual_seed(0)
        cpu_start = time.process_time()
        result = solve(problem, RouterMerge(problem), "ls", steps=args.steps, progress=False)
        if rank == 0:
            timing = {"wall": result.settings["train_seconds"], "cpu": time.process_time() - cpu_start}
            Path(out).write_text(json.dumps(timing))
    finally:
        dist.destroy_process_group()


def timings(world_size: int, args: argparse.Namespace) -> tuple[float, float]:
    """Train on `world_size` spawned processes; rank 0's steps per second and CPU milliseconds per step."""
    with tempfile.TemporaryDirectory() as folder:
        out = f"{folder}/timing.json"
        mp.spawn(_run, args=(world_size, f"{folder}/init", args, out), nprocs=world_size, join=True)
        timing = json.loads(Path(out).read_text())
        return args.steps / timing["wall"], 1000 * timing["cpu"] / args.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64, help="global batch per task (split over the processes)")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = parser.parse_args()
    (one, one_cpu), (two, two_cpu) = timings(1, args), timings(2, args)
    print(f"global batch {args.batch} per task, {args.threads} thread(s) per process, {args.steps} steps")
    print(f"1 process  : {one:8.2f} steps/s, {one_cpu:8.1f} CPU ms per step")
    print(f"2 processes: {two:8.2f} steps/s, {two_cpu:8.1f} CPU ms per step per process")
    print(f"speed-up 2 vs 1: {two / one:.2f}x (CPU time per process: {two_cpu / one_cpu:.2f}x)")


if __name__ == "__main__":
    main()
