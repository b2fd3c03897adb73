"""Training input pipeline on JPEG files: images/s with workers against none, and whether decoding hides behind
the step.

Generates JPEGs at SUN397's size (generated_images.SUN397_SIZE) and streams `MergingProblem`-style training
steps (T tasks x batch images, decoded and CLIP-preprocessed to 224 px) through `mooframe.data.TrainingBatches`:

    (a) images/s with 0 workers (decoding in the main process) and with N workers;
    (b) the step time when each step also waits `compute` seconds, a stand-in for a GPU step (the main process
        waits, as it waits for CUDA), with `compute` set to the measured decode time of one step: with 0 workers
        a step costs compute + decode, with N workers and prefetching it should cost at most
        1.2 x max(compute, decode / N).

Usage: python benchmarks/data_pipeline.py [--workers N] [--tasks 2] [--batch 16] [--steps 4] [--rounds 3]
Default N: mooframe's default worker count on this machine (min(8, cores - 1)). The first step of each run
(worker start-up, filling the prefetch queue) is not timed; torch runs one thread in the main process, as in
each worker, so that "decode" is the time of one core. The configurations run in `--rounds` interleaved
rounds and the fastest of each counts: on a shared machine other jobs only ever add time.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from generated_images import SUN397_SIZE, write_jpegs

from mooframe.data import TrainingBatches, available_cores, default_workers
from mooframe.problems.image_classification import ImageDataset, clip_transform


def seconds_per_step(datasets, batch: int, steps: int, workers: int, compute: float) -> float:
    """Mean wall time of steps 2..steps+1 (each: next batch, then `compute` seconds of waiting)."""
    stream = TrainingBatches(datasets, batch, np.random.default_rng(0), workers=workers)
    next(stream)
    start = time.perf_counter()
    for _ in range(steps):
        next(stream)
        time.sleep(compute)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, help="N (default: mooframe's default for this machine)")
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="images per task per step")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the fastest counts")
    parser.add_argument("--images", type=int, default=128, help="JPEG files per task")
    args = parser.parse_args()
    torch.set_num_threads(1)  # decode on one core in the main process, as in each worker
    with tempfile.TemporaryDirectory(prefix="mooframe-jpegs-") as root:
        transform = clip_transform(224)
        datasets = []
        for task in range(args.tasks):
            paths = write_jpegs(f"{root}/{task}", args.images, seed=task)
            datasets.append(ImageDataset(paths, [0] * len(paths), transform))
        workers = args.workers if args.workers is not None else default_workers(datasets)
        per_step = args.tasks * args.batch
        print(f"{args.tasks} tasks x {args.batch} JPEGs of {SUN397_SIZE[0]}x{SUN397_SIZE[1]} per step, "
              f"{available_cores()} cores, N = {workers} workers")  # fmt: skip
        # the stand-in step: as long as decoding one step's images in one process (the fastest of `rounds` runs)
        compute = min(seconds_per_step(datasets, args.batch, args.steps, 0, 0.0) for _ in range(args.rounds))
        configs = {
            "decode": (0, 0.0),
            "loaded": (workers, 0.0),
            "serial": (0, compute),
            "overlapped": (workers, compute),
        }
        best = {name: float("inf") for name in configs}
        for _ in range(args.rounds):
            for name, (n, wait) in configs.items():
                best[name] = min(best[name], seconds_per_step(datasets, args.batch, args.steps, n, wait))
        decode, loaded, serial, overlapped = (best[name] for name in configs)
        bound = max(compute, decode / max(workers, 1))
        print(f"(a) 0 workers: {per_step / decode:.1f} images/s ({1e3 * decode / per_step:.1f} ms per image)")
        print(f"(a) {workers} workers: {per_step / loaded:.1f} images/s = {decode / loaded:.2f}x 0 workers")
        print(f"(b) compute {compute:.3f} s/step, decode {decode:.3f} s/step")
        print(f"(b) 0 workers: {serial:.3f} s/step = {serial / (compute + decode):.2f}x (compute + decode)")
        print(f"(b) {workers} workers: {overlapped:.3f} s/step = {overlapped / bound:.2f}x max(compute, decode / N)"
              f" = {overlapped / (compute + decode):.2f}x (compute + decode)")  # fmt: skip


if __name__ == "__main__":
    main()
