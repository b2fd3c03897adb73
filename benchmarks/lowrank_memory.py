"""Memory held, step peak and step time of PWE-MoE with full-rank and low-rank task vectors, against FusionBench's.

Measured side by side in one run, each case in its own subprocess, on a CLIP ViT-B/32 vision tower
(transformers' CLIPVisionConfig defaults, random weights, experts = pretrained + random noise), MLP-only
up-scaling, LS, batch `--batch` per task:

    full_keep   full rank, the problem keeps every expert whole (release_experts=False: the old layout)
    full        full rank, release_experts=True: the problem keeps only the up-scaled experts' parameters
    rank16      task vectors of the up-scaled linear layers as rank-16 truncated SVDs, release_experts=True

FusionBench's layout is counted, not run: the pretrained up-scaled parameters, T task vectors of them and the
merged rest, U (1 + T) + R float32 parameters, plus the same heads and routers as mooframe's.

"held" is the memory held for the problem and the model (everything but the step's activations): the bytes of
the distinct tensor storages reachable from the problem (backbone, heads, the experts' resident tensors) and the
model (buffers, parameters); data tensors are left out on both sides. "store" is the part of it that holds the
up-scaled task vectors (the experts' up-scaled tensors, or the low-rank factors and the dense biases). The step's
peak is the process's resident-set high-water mark (VmHWM, reset before the timed steps) less the resident set
after imports, so it includes everything held; "activations" is that peak less the resident set just before the
steps (activations, merged weights, gradients, optimizer state). Tensor memory on CPU is counted exactly by
storage; the peak comes from the kernel's accounting (tracemalloc does not see torch's allocations), with
glibc's mmap threshold fixed at 64 KiB in the cases' processes, so that every tensor larger than that is its
own mapping, returned to the kernel when freed: the resident set then follows the live tensor memory.

Usage: python benchmarks/lowrank_memory.py [--tasks 2 8] [--batch 4] [--steps 2] [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from pwe_moe_step import _reset_peak, _status_bytes  # same directory: measured the same way as that benchmark

#: every allocation over 64 KiB its own mapping, unmapped when freed: the resident set follows live tensor memory
MALLOC_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
CASES = {
    "full_keep": {},
    "full": {"release_experts": True},
    "rank16": {"release_experts": True, "task_vector_rank": 16},
}


def measure(case: str, tasks: int, steps: int, batch: int, repeats: int, threads: int) -> dict[str, float]:
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from mooframe import solve
    from mooframe.adapters.hf_clip import UPSCALE_PRESETS, HFCLIPVisionBackbone
    from mooframe.models.pwe_moe import PWEMoE
    from mooframe.problems.merging import MergingProblem
    from mooframe.solvers.ls import LinearScalarization

    torch.set_num_threads(threads)
    baseline = _status_bytes("VmRSS")
    torch.manual_seed(0)
    config = CLIPVisionConfig()
    backbone = HFCLIPVisionBackbone(CLIPVisionModel(config))
    experts = [
        {name: p.detach() + 1e-3 * torch.randn_like(p) for name, p in backbone.named_parameters()} for _ in range(tasks)
    ]
    heads = [nn.Linear(config.hidden_size, 10) for _ in range(tasks)]
    pixels = (2 * batch, 3, config.image_size, config.image_size)
    data = [TensorDataset(torch.randn(pixels), torch.randint(0, 10, (2 * batch,))) for _ in experts]
    problem = MergingProblem(backbone, experts, heads, data, batch_size=batch, upscale_presets=UPSCALE_PRESETS)
    del experts
    start = time.perf_counter()
    model = PWEMoE(problem, upscale="mlp", **CASES[case])
    build_seconds = time.perf_counter() - start

    up = sum(p.numel() for n, p in backbone.named_parameters() if n in model.groups)
    rest = sum(p.numel() for n, p in backbone.named_parameters() if n not in model.groups)
    extras = sum(p.numel() for p in [*problem.heads.parameters(), *model.trainable_parameters()])
    store = [t for state in problem.expert_states for n, t in state._tensors.items() if n in model.groups]
    store += [t for _, t in model.low_rank.named_buffers()] + (
        [] if model.vectors is None else [t for _, t in model.vectors.items()]
    )
    held = [
        *backbone.parameters(),
        *problem.heads.parameters(),
        *(t for s in problem.expert_states for t in s.resident()),
    ]
    held += [*model.buffers(), *model.parameters()]
    run = {"progress": False, "lr": 1e-5}
    solve(problem, model, LinearScalarization(), steps=1, **run)  # warm-up: allocator, optimizer state
    _reset_peak("cpu")
    before_steps = _status_bytes("VmRSS")
    times = [solve(problem, model, LinearScalarization(), steps=steps, **run).settings["train_seconds"] / steps
             for _ in range(repeats)]  # fmt: skip
    peak = _status_bytes("VmHWM")
    errors = [e for errors in model.truncation_errors.values() for e in errors]
    return {
        "held_bytes": _storage_bytes(held),
        "store_bytes": _storage_bytes(store),
        "fusionbench_bytes": 4.0 * (up * (1 + tasks) + rest + extras),
        "held_rss_bytes": before_steps - baseline,
        "peak_bytes": peak - baseline,
        "activation_bytes": peak - before_steps,
        "seconds_per_step": min(times),
        "build_seconds": build_seconds,
        "max_truncation_error": max(errors, default=0.0),
    }


def _storage_bytes(tensors: list) -> float:
    """Bytes of the distinct storages behind `tensors` (views and shared references counted once)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return float(sum(storages.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--batch", type=int, default=4, help="examples per task per step")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per case; the fastest counts")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, tasks = args.child
        print(json.dumps(measure(case, int(tasks), args.steps, args.batch, args.repeats, args.threads)))
        return
    gib = 2.0**30
    print(f"CLIP ViT-B/32 vision tower, MLP up-scaled, LS, batch {args.batch} per task, {args.threads} thread(s)")
    for tasks in args.tasks:
        results = {}
        for case in args.cases:
            command = [sys.executable, __file__, "--child", case, str(tasks), "--steps", str(args.steps),
                       "--batch", str(args.batch), "--repeats", str(args.repeats),
                       "--threads", str(args.threads)]  # fmt: skip
            out = subprocess.run(command, check=True, capture_output=True, text=True, env=MALLOC_ENV).stdout
            r = results[case] = json.loads(out.strip().splitlines()[-1])
            print(
                f"T={tasks} {case:9s} held {r['held_bytes'] / gib:5.2f} GiB (RSS {r['held_rss_bytes'] / gib:5.2f}), "
                f"store {r['store_bytes'] / gib:5.3f} GiB, step peak {r['peak_bytes'] / gib:5.2f} GiB "
                f"(activations {r['activation_bytes'] / gib:5.2f}), {r['seconds_per_step']:6.2f} s/step, "
                f"build {r['build_seconds']:5.1f} s, max truncation error {r['max_truncation_error']:.3f}",
                flush=True,
            )
        fusionbench = next(iter(results.values()))["fusionbench_bytes"]
        print(f"T={tasks} FusionBench layout {fusionbench / gib:5.2f} GiB")
        for case, r in results.items():
            print(f"T={tasks} {case}: held / FusionBench layout {r['held_bytes'] / fusionbench:.2f}x")
        if "full" in results and "rank16" in results:
            full, low = results["full"], results["rank16"]
            saved = full["store_bytes"] - low["store_bytes"]
            print(
                f"T={tasks} rank16 / full: store {low['store_bytes'] / full['store_bytes']:.3f}x, "
                f"held {low['held_bytes'] / full['held_bytes']:.2f}x, "
                f"step peak fell {(full['peak_bytes'] - low['peak_bytes']) / gib:.2f} GiB "
                f"(store saving {saved / gib:.2f} GiB), "
                f"step time {low['seconds_per_step'] / full['seconds_per_step']:.2f}x"
            )


if __name__ == "__main__":
    main()
