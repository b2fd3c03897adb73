"""The GPU figures in one run (at most 8 minutes on one GPU): step time and memory, input pipeline, a real-size run.

    (1) step: PWE-MoE (LS and EPO) against LS full fine-tuning of one model, CLIP ViT-B/32 vision tower (random
        weights, random experts), T = 2 and 8, batch 16 per task: seconds per step (median of the timed steps)
        and torch.cuda.max_memory_allocated (problem, model, optimizer and activations);
    (2) pipeline: images/s of the training input pipeline with 0 and N workers on JPEGs generated at the eight
        datasets' image sizes (approximate: SIZES), CLIP-preprocessed to 224 px;
    (3) run: 200 steps of PWE-MoE (LS) on T = 2 JPEG training sets through the DataLoader workers, then the
        11-preference front on JPEG test sets (decode once, 11 merged models per pass; again under bfloat16
        autocast), with wall times and images/s;
    (4) lm: PWE-MoE (LS) on the language-model default (`lm_digits`, copy and reverse, full and LoRA experts, built
        in a temporary cache) with the frozen parts in bfloat16 and in float32: every training loss finite, the
        routers moved from their initialization and the training loss fallen, and the 11-preference fronts'
        accuracies side by side.

Writes gpu_check.json and gpu_check.md to --out and exits non-zero only when a part fails (the others still
run and are written). `--device cpu --quick` runs every part at toy sizes in seconds (a check of the script,
not a measurement).

Usage: python benchmarks/gpu_check.py [--device cuda] [--out runs/gpu_check] [--quick] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from generated_images import write_jpegs
from torch import nn
from torch.utils.data import TensorDataset
from transformers import CLIPVisionConfig, CLIPVisionModel

from mooframe import solve
from mooframe.adapters.hf_clip import UPSCALE_PRESETS, HFCLIPVisionBackbone
from mooframe.data import TrainingBatches, available_cores, default_workers
from mooframe.preferences import uniform_grid
from mooframe.problems.image_classification import ImageDataset, clip_transform
from mooframe.problems.lm_default import DigitStringTasks
from mooframe.problems.merging import MergingProblem
from mooframe.registry import build_model, build_solver

#: (width, height) of typical images of the eight tasks (several vary in size; these are representative).
SIZES = {
    "sun397": (640, 480),
    "stanford-cars": (700, 466),
    "resisc45": (256, 256),
    "eurosat": (64, 64),
    "svhn": (32, 32),
    "gtsrb": (50, 50),
    "mnist": (28, 28),
    "dtd": (512, 512),
}
QUICK_TOWER = dict(image_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
STEP_CASES = [  # (label, tasks, model, solver)
    ("LS full fine-tuning", 2, "per_ray", "ls"),
    ("PWE-MoE (LS)", 2, "pwe_moe", "ls"),
    ("PWE-MoE (EPO)", 2, "pwe_moe", "epo"),
    ("LS full fine-tuning", 8, "per_ray", "ls"),
    ("PWE-MoE (LS)", 8, "pwe_moe", "ls"),
    ("PWE-MoE (EPO)", 8, "pwe_moe", "epo"),
]

PARTS = ["step", "pipeline", "run", "lm"]


def image_size(quick: bool) -> int:
    return QUICK_TOWER["image_size"] if quick else 224


def merging_problem(tasks: int, device: str, quick: bool, train: list, test: list | None = None) -> MergingProblem:
    """A ViT-B/32 vision tower (random weights; toy size with `quick`), T experts = tower + noise, linear heads."""
    torch.manual_seed(0)
    config = CLIPVisionConfig(**(QUICK_TOWER if quick else {}))
    backbone = HFCLIPVisionBackbone(CLIPVisionModel(config)).to(device)
    experts = [{k: p.detach() + 1e-3 * torch.randn_like(p) for k, p in backbone.named_parameters()} for _ in train]
    heads = [nn.Linear(config.hidden_size, 10) for _ in range(tasks)]
    return MergingProblem(backbone, experts, heads, train, test, batch_size=16, upscale_presets=UPSCALE_PRESETS)


def step_figures(device: str, quick: bool) -> list[dict[str, Any]]:
    rows = []
    for label, tasks, model_name, solver_name in STEP_CASES:
        size = image_size(quick)
        data = [TensorDataset(torch.randn(32, 3, size, size), torch.randint(0, 10, (32,))) for _ in range(tasks)]
        problem = merging_problem(tasks, device, quick, data).to(device)
        options = {"rays": [[1 / tasks] * tasks]} if model_name == "per_ray" else {}
        model = build_model(model_name, problem, **options).to(device)
        solver = build_solver(solver_name)
        run = {"progress": False, "device": device, "lr": 1e-5}
        solve(problem, model, solver, steps=1 if quick else 2, **run)  # warm-up: kernels, allocator, optimizer state
        _reset_peak(device)
        times, steps = [], 1 if quick else 4
        for _ in range(1 if quick else 5):
            times.append(solve(problem, model, solver, steps=steps, **run).settings["train_seconds"])
        rows.append(
            {
                "method": label,
                "tasks": tasks,
                "seconds_per_step": statistics.median(times) / steps,
                "peak_gib": _peak(device) / 2**30,
                "trainable": sum(p.numel() for p in model.trainable_parameters()),
            }
        )
        print(f"step {label:22s} T={tasks}: {rows[-1]['seconds_per_step']:.4f} s/step, "
              f"{rows[-1]['peak_gib']:.2f} GiB", flush=True)  # fmt: skip
        del problem, model, data
        _free(device)
    full = {row["tasks"]: row for row in rows if row["method"] == "LS full fine-tuning"}
    for row in rows:
        base = full[row["tasks"]]
        row["time_vs_full_ft"] = row["seconds_per_step"] / base["seconds_per_step"]
        row["memory_vs_full_ft"] = row["peak_gib"] / base["peak_gib"] if base["peak_gib"] else None
    return rows


def pipeline_figures(root: Path, workers: int | None, quick: bool) -> list[dict[str, Any]]:
    """Images/s over `steps` steps after the first (which starts the workers), torch on one thread in the main
    process as in each worker."""
    rows, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for task, size in SIZES.items():
            rows.append(_pipeline_row(root, task, size, workers, quick))
    finally:
        torch.set_num_threads(threads)
    return rows


def _pipeline_row(root: Path, task: str, size: tuple[int, int], workers: int | None, quick: bool) -> dict[str, Any]:
    n_images, steps = (32, 2) if quick else (192, 6)
    paths = write_jpegs(root / f"pipeline-{task}", n_images, size=size)
    datasets = [ImageDataset(paths, [0] * len(paths), clip_transform(224))] * 2
    workers = default_workers(datasets) if workers is None else workers
    rate = {}
    for n in (0, workers):
        stream = TrainingBatches(datasets, 16, np.random.default_rng(0), workers=n)
        next(stream)
        start = time.perf_counter()
        for _ in range(steps):
            next(stream)
        rate[n] = 2 * 16 * steps / (time.perf_counter() - start)
    row = {"task": task, "size": f"{size[0]}x{size[1]}", "images_per_s_0": rate[0],
           "images_per_s_n": rate[workers], "workers": workers}  # fmt: skip
    print(f"pipeline {task:14s} {row['size']:>8s}: {rate[0]:.0f} images/s with 0 workers, "
          f"{rate[workers]:.0f} with {workers}", flush=True)  # fmt: skip
    return row


def run_figures(root: Path, device: str, quick: bool) -> dict[str, Any]:
    steps, n_train, n_test = (3, 32, 24) if quick else (200, 512, 1024)
    train, test = [], []
    for task in range(2):
        for split, n, out in (("train", n_train, train), ("test", n_test, test)):
            paths = write_jpegs(root / f"run-{split}-{task}", n, size=SIZES["sun397"], seed=10 * task + len(out))
            labels = np.random.default_rng(task).integers(0, 10, n).tolist()
            out.append(ImageDataset(paths, labels, clip_transform(image_size(quick))))
    problem = merging_problem(2, device, quick, train, test)
    start = time.perf_counter()
    result = solve(problem, model="pwe_moe", solver="ls", steps=steps, device=device, progress=False)
    train_seconds = time.perf_counter() - start
    prefs = uniform_grid(2, 11)
    figures = {"steps": steps, "train_seconds": train_seconds, "train_images_per_s": steps * 32 / train_seconds}
    for label, autocast in (("float32", None), ("bfloat16 autocast", "bfloat16")):
        problem.eval_autocast = autocast
        _sync(device)
        start = time.perf_counter()
        front = result.front(prefs, device=device)
        _sync(device)
        seconds = time.perf_counter() - start
        figures[f"eval_seconds ({label})"] = seconds
        figures[f"eval_images_per_s ({label})"] = 2 * n_test / seconds
        figures[f"mean accuracy ({label})"] = float(front.metrics["accuracy"].mean())
    print(f"run: {json.dumps(figures)}", flush=True)
    return figures


def lm_figures(root: Path, device: str, quick: bool) -> list[dict[str, Any]]:
    """PWE-MoE on `lm_digits` (2 tasks) per expert kind and precision of the frozen parts; raises when bfloat16
    gives a non-finite loss or leaves the routers untrained."""
    steps, rows = 10 if quick else 200, []
    for experts in ("full", "lora"):
        for precision in ("bfloat16", "float32"):
            row = _lm_row(root, device, experts, precision, steps)
            rows.append(row)
            print(f"lm {experts} {precision}: {json.dumps(row)}", flush=True)
            trained = row["finite"] and row["router_change"] > 0 and row["last_loss"] < row["first_loss"]
            if precision == "bfloat16" and not trained:
                raise RuntimeError(f"bfloat16 frozen parts, {experts} experts: {row}")
            _free(device)
    return rows


def _lm_row(root: Path, device: str, experts: str, precision: str, steps: int) -> dict[str, Any]:
    problem = DigitStringTasks(["copy", "reverse"], experts, batch_size=16, cache_dir=str(root / "lm"), progress=False)
    problem.set_precision(precision)
    torch.manual_seed(0)
    model = build_model("pwe_moe", problem, upscale="attention_mlp").to(device)
    initial = [p.detach().clone() for p in model.trainable_parameters()]
    _sync(device)
    start = time.perf_counter()
    result = solve(problem, model, "ls", steps=steps, lr=3e-2, alpha=0.2, device=device, progress=False)
    _sync(device)
    seconds = time.perf_counter() - start
    losses, tenth = result.history["loss"], max(1, steps // 10)
    trained = zip(model.trainable_parameters(), initial, strict=True)
    front = result.front(uniform_grid(2, 11), device=device)
    return {
        "experts": experts,
        "precision": precision,
        "steps": steps,
        "train_seconds": seconds,
        "finite": bool(np.isfinite(losses).all()),
        "router_change": max(float((p.detach() - p0).abs().max()) for p, p0 in trained),
        "first_loss": float(losses[:tenth].mean()),
        "last_loss": float(losses[-tenth:].mean()),
        "mean_accuracy": float(front.metrics["accuracy"].mean()),
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# mooframe GPU check: {report['device_name']}", "", f"torch {report['torch']}, {report['cores']} cores"]
    if report.get("step"):
        lines += [
            "",
            "| method | T | s/step | vs full FT | peak GiB | vs full FT | trainable |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in report["step"]:
            memory = "" if r["memory_vs_full_ft"] is None else f"{r['memory_vs_full_ft']:.2f}x"
            cells = [r["method"], r["tasks"], f"{r['seconds_per_step']:.4f}", f"{r['time_vs_full_ft']:.2f}x",
                     f"{r['peak_gib']:.2f}", memory, f"{r['trainable']:,}"]  # fmt: skip
            lines.append("| " + " | ".join(map(str, cells)) + " |")
    if report.get("pipeline"):
        workers = report["pipeline"][0]["workers"]
        lines += ["", f"| task | image size | images/s, 0 workers | images/s, {workers} workers | ratio |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for r in report["pipeline"]:
            ratio = r["images_per_s_n"] / r["images_per_s_0"]
            lines.append(f"| {r['task']} | {r['size']} | {r['images_per_s_0']:.0f} | {r['images_per_s_n']:.0f} | "
                         f"{ratio:.2f}x |")  # fmt: skip
    if report.get("run"):
        lines += ["", "| real-size run | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in report["run"].items()]
    if report.get("lm"):
        header = (
            "| lm_digits experts | frozen parts | steps | train s | finite | router change | loss, first / last tenth"
        )
        lines += ["", f"{header} | mean accuracy |", "|---|---|---|---|---|---|---|---|"]
        for r in report["lm"]:
            cells = [r["experts"], r["precision"], r["steps"], f"{r['train_seconds']:.1f}", r["finite"],
                     f"{r['router_change']:.3g}", f"{r['first_loss']:.3f} / {r['last_loss']:.3f}",
                     f"{r['mean_accuracy']:.3f}"]  # fmt: skip
            lines.append("| " + " | ".join(map(str, cells)) + " |")
    for part, error in report["failures"].items():
        lines += ["", f"**{part} failed**: `{error}`"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="runs/gpu_check")
    parser.add_argument("--quick", action="store_true", help="toy sizes: checks the script in seconds")
    parser.add_argument("--workers", type=int, help="N for the pipeline (default: mooframe's default)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=PARTS)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; pass --device cpu (with --quick to check the script)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    report: dict[str, Any] = {"device": args.device, "device_name": name, "torch": torch.__version__,
                              "cores": available_cores(), "quick": args.quick, "failures": {}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mooframe-gpu-check-") as tmp:
        root = Path(tmp)
        parts = {
            "step": lambda: step_figures(args.device, args.quick),
            "pipeline": lambda: pipeline_figures(root, args.workers, args.quick),
            "run": lambda: run_figures(root, args.device, args.quick),
            "lm": lambda: lm_figures(root, args.device, args.quick),
        }
        for part in args.parts:
            start = time.perf_counter()
            try:
                report[part] = parts[part]()
            except Exception as error:  # keep going: the other parts' figures are still worth writing
                traceback.print_exc()
                report["failures"][part] = f"{type(error).__name__}: {error}"
            report[f"{part}_wall_seconds"] = time.perf_counter() - start
            _free(args.device)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 1 if report["failures"] else 0


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> float:
    return float(torch.cuda.max_memory_allocated()) if device.startswith("cuda") else 0.0


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _free(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
