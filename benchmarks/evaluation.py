"""Decode-once evaluation of a front against one pass over the test sets per preference.

A two-task PWE-MoE front (11 preferences) of a small CLIP vision tower (224 px input, so the test images go
through CLIP's real preprocessing) is evaluated on generated JPEG test sets (generated_images.SUN397_SIZE) in
two ways, side by side in one run:

    new: `result.front(prefs)`: each test batch decoded once and scored by the 11 merged models in turn;
    old: `result.front(prefs, chunk=1)`: one full pass over the test sets per preference.

Printed: the wall-time ratio old / new, how often each image was decoded (a dataset wrapper counts every
`__getitem__`, in worker processes too), and whether the two fronts are identical. The tower is small so that
decoding dominates, as it does for ViT-B/32 on a GPU.

Usage: python benchmarks/evaluation.py [--images 64] [--workers N] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from generated_images import SUN397_SIZE, CountingDataset, write_jpegs
from torch import nn
from torch.utils.data import TensorDataset
from transformers import CLIPVisionConfig, CLIPVisionModel

from mooframe import solve
from mooframe.adapters.hf_clip import UPSCALE_PRESETS, HFCLIPVisionBackbone
from mooframe.preferences import uniform_grid
from mooframe.problems.image_classification import ImageDataset, clip_transform
from mooframe.problems.merging import MergingProblem

TOWER = dict(image_size=224, patch_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1)


def build_problem(root: str, images: int, tasks: int = 2) -> tuple[MergingProblem, list[CountingDataset]]:
    """Random tower, experts = tower + noise, linear heads; training data in memory, test data JPEG files."""
    torch.manual_seed(0)
    backbone = HFCLIPVisionBackbone(CLIPVisionModel(CLIPVisionConfig(num_attention_heads=2, **TOWER)))
    experts = [
        {k: p.detach() + 0.02 * torch.randn_like(p) for k, p in backbone.named_parameters()} for _ in range(tasks)
    ]
    heads = [nn.Linear(TOWER["hidden_size"], 10) for _ in range(tasks)]
    train = [TensorDataset(torch.randn(64, 3, 224, 224), torch.randint(0, 10, (64,))) for _ in range(tasks)]
    test = []
    for task in range(tasks):
        paths = write_jpegs(f"{root}/{task}", images, seed=task)
        labels = np.random.default_rng(task).integers(0, 10, len(paths)).tolist()
        test.append(CountingDataset(ImageDataset(paths, labels, clip_transform(224))))
    problem = MergingProblem(backbone, experts, heads, train, test, batch_size=8, eval_batch_size=32,
                             upscale_presets=UPSCALE_PRESETS)  # fmt: skip
    return problem, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64, help="JPEG test images per task")
    parser.add_argument("--workers", type=int, help="loader processes (default: mooframe's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)  # on a shared CPU, waiting threads spin; the loader's workers have their own cores
    with tempfile.TemporaryDirectory(prefix="mooframe-jpegs-") as root:
        problem, test = build_problem(root, args.images)
        problem.workers = args.workers
        result = solve(problem, model="pwe_moe", solver="ls", steps=20, device=args.device, progress=False)
        prefs = uniform_grid(2, 11)
        timings, fronts = {}, {}
        for name, chunk in (("new", None), ("old", 1)):
            before = sum(data.reads.value for data in test)
            start = time.perf_counter()
            fronts[name] = result.front(prefs, chunk=chunk)
            timings[name] = time.perf_counter() - start
            reads = (sum(data.reads.value for data in test) - before) / sum(len(data) for data in test)
            print(f"{name}: {timings[name]:.1f} s, each image decoded {reads:g} time(s)")
        same = np.array_equal(fronts["new"].objectives, fronts["old"].objectives) and all(
            np.array_equal(values, fronts["old"].metrics[key]) for key, values in fronts["new"].metrics.items()
        )
        ratio = timings["old"] / timings["new"]
        size = f"{SUN397_SIZE[0]}x{SUN397_SIZE[1]}"
        print(f"{len(prefs)} preferences, 2 tasks x {args.images} JPEGs of {size}, device {args.device}: "
              f"old / new = {ratio:.2f}x; identical fronts: {same}")  # fmt: skip
        if not same:
            raise SystemExit("the two evaluations differ")


if __name__ == "__main__":
    main()
