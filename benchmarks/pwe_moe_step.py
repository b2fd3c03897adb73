"""Step time and peak memory of PWE-MoE against full fine-tuning, and of the Gram path against LS.

Measured side by side in one run, each configuration in its own subprocess (clean peak memory), on a CLIP
ViT-B/32 vision tower (transformers' CLIPVisionConfig defaults) with random weights and random experts:

    (a) T=2: PWE-MoE (MLP preset, LS) step / LS full fine-tuning step (one model, `per_ray` with one ray),
        also with the task vectors in bfloat16
    (b) T=8: PWE-MoE with a Gram-path solver (LS routed through per-task gradients, as EPO/MGDA) / with LS

Usage: python benchmarks/pwe_moe_step.py [--device cuda] [--size small] [--steps 3] [--repeats 3] [--rounds 2]
Time is wall-clock per step (the fastest run); the process CPU time per step is printed beside it, as it is
less disturbed by other jobs on a shared CPU. The cases' subprocesses run in `--rounds` interleaved rounds, so
that a change in the machine's load hits every case alike, and torch uses `--threads` threads (default 1: on
a shared CPU, threads waiting for a busy core spin and multiply both the wall and the CPU time of a step).
Peak memory is torch.cuda.max_memory_allocated on CUDA, on CPU
the resident-set high-water mark (VmHWM) less the resident set after imports; both include the problem
(pretrained model and T experts), the model, the optimizer and the activations.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SIZES = {
    "vit-b-32": {},  # CLIPVisionConfig defaults: 12 layers, width 768, patch 32, 224 px
    "small": {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6, "num_attention_heads": 6},
}
CASES = {
    "full_ft": {"model": "per_ray", "solver": "ls", "tasks": 2},
    "pwe_moe": {"model": "pwe_moe", "solver": "ls", "tasks": 2},
    "pwe_moe_bf16": {"model": "pwe_moe", "solver": "ls", "tasks": 2, "options": {"task_vector_dtype": "bfloat16"}},
    "pwe_moe_t8": {"model": "pwe_moe", "solver": "ls", "tasks": 8},
    "pwe_moe_t8_gram": {"model": "pwe_moe", "solver": "gram_ls", "tasks": 8},
}


def measure(case: str, size: str, device: str, steps: int, batch: int, repeats: int, threads: int) -> dict[str, float]:
    """Build the problem and model of `case`, warm up one step, then time `repeats` runs of `steps` steps."""
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from mooframe import solve
    from mooframe.adapters.hf_clip import UPSCALE_PRESETS, HFCLIPVisionBackbone
    from mooframe.problems.merging import MergingProblem
    from mooframe.registry import build_model
    from mooframe.solvers.ls import LinearScalarization

    class GramLS(LinearScalarization):
        needs_gram = True

    torch.set_num_threads(threads)
    spec = CASES[case]
    baseline = 0.0 if device.startswith("cuda") else _status_bytes("VmRSS")  # interpreter and libraries
    torch.manual_seed(0)
    config = CLIPVisionConfig(**SIZES[size])
    backbone = HFCLIPVisionBackbone(CLIPVisionModel(config))
    experts = [
        {name: p.detach() + 1e-3 * torch.randn_like(p) for name, p in backbone.named_parameters()}
        for _ in range(spec["tasks"])
    ]
    heads = [nn.Linear(config.hidden_size, 10) for _ in range(spec["tasks"])]
    pixels = (2 * batch, 3, config.image_size, config.image_size)
    data = [TensorDataset(torch.randn(pixels), torch.randint(0, 10, (2 * batch,))) for _ in experts]
    problem = MergingProblem(backbone, experts, heads, data, batch_size=batch, upscale_presets=UPSCALE_PRESETS)
    del experts
    problem.to(device)
    options = spec.get("options", {})
    if spec["model"] == "per_ray":
        options = {"rays": [[1 / spec["tasks"]] * spec["tasks"]]}  # full fine-tuning of one model
    model = build_model(spec["model"], problem, **options).to(device)
    solver = GramLS() if spec["solver"] == "gram_ls" else LinearScalarization()
    run = {"progress": False, "device": device, "lr": 1e-5}
    solve(problem, model, solver, steps=1, **run)  # warm-up: allocator, kernels, optimizer state shapes
    _reset_peak(device)
    # the fastest of `repeats` runs: on a shared machine, other jobs only ever add time
    wall, cpu = [], []
    for _ in range(repeats):
        start = time.process_time()
        wall.append(solve(problem, model, solver, steps=steps, **run).settings["train_seconds"] / steps)
        cpu.append((time.process_time() - start) / steps)
    return {"seconds_per_step": min(wall), "cpu_seconds_per_step": min(cpu), "peak_bytes": _peak(device) - baseline}


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set


def _peak(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return float(torch.cuda.max_memory_allocated())
    return _status_bytes("VmHWM")


def _status_bytes(field: str) -> float:
    status = Path("/proc/self/status").read_text().splitlines()
    return 1024.0 * float(next(line.split()[1] for line in status if line.startswith(field + ":")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", choices=SIZES, default="vit-b-32")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16, help="examples per task per step")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case; the fastest counts")
    parser.add_argument("--rounds", type=int, default=2, help="subprocesses per case, interleaved; the fastest counts")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads in each case")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measured = measure(args.child, args.size, args.device, args.steps, args.batch, args.repeats, args.threads)
        print(json.dumps(measured))
        return
    results: dict[str, dict[str, float]] = {}
    for round_ in range(args.rounds):
        for case in args.cases:
            command = [sys.executable, __file__, "--child", case, "--size", args.size, "--device", args.device,
                       "--steps", str(args.steps), "--batch", str(args.batch), "--repeats", str(args.repeats),
                       "--threads", str(args.threads)]  # fmt: skip
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(
                f"round {round_} {case:16s} {r['seconds_per_step']:8.3f} s/step  {r['cpu_seconds_per_step']:8.3f} "
                f"CPU s/step  peak {r['peak_bytes'] / 2**30:6.2f} GiB",
                flush=True,
            )
            best = results.setdefault(case, r)
            for key in r:  # the fastest time and the smallest peak: other jobs only ever add to either
                best[key] = min(best[key], r[key])
    timing = f"fastest of {args.rounds} rounds x {args.repeats} x {args.steps} steps, {args.threads} thread(s)"
    print(f"size {args.size}, device {args.device}, batch {args.batch} per task, {timing}")
    for label, num, den in (
        ("(a) PWE-MoE(LS) / LS full fine-tuning, T=2", "pwe_moe", "full_ft"),
        ("(a) PWE-MoE(LS), bfloat16 task vectors / LS full fine-tuning, T=2", "pwe_moe_bf16", "full_ft"),
        ("(b) PWE-MoE Gram path / LS, T=8", "pwe_moe_t8_gram", "pwe_moe_t8"),
    ):
        if num in results and den in results:
            time_ratio = results[num]["seconds_per_step"] / results[den]["seconds_per_step"]
            memory_ratio = results[num]["peak_bytes"] / results[den]["peak_bytes"]
            cpu_ratio = results[num]["cpu_seconds_per_step"] / results[den]["cpu_seconds_per_step"]
            print(f"{label}: time {time_ratio:.2f}x (CPU time {cpu_ratio:.2f}x), peak memory {memory_ratio:.2f}x")


if __name__ == "__main__":
    main()
