"""Digits build: one intra-op thread vs two, measured side by side (wall and CPU seconds, and their ratios).

PYTHONPATH=. python benchmarks/digits_threads.py
"""

from __future__ import annotations

import time

import torch

from mooframe.problems.digits import _build, torch_threads


def timed_build(threads: int) -> tuple[float, float]:
    with torch_threads(threads):
        wall, cpu = time.perf_counter(), time.process_time()
        _build(0)
        return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available")
    one, two = timed_build(1), timed_build(2)
    print(f"1 thread : wall {one[0]:6.1f} s  cpu {one[1]:6.1f} s")
    print(f"2 threads: wall {two[0]:6.1f} s  cpu {two[1]:6.1f} s")
    print(f"ratio 2/1: wall {two[0] / one[0]:.2f}  cpu {two[1] / one[1]:.2f}")


if __name__ == "__main__":
    main()
