"""The hypernetwork's learning rate: HV of its front over the true front's, on ZDT1 and ZDT3, LS and EPO.

Settings of the spine's tests (1000 steps, Adam, cosine decay, hidden 256); HV at ref (1.1, 1.1) by pymoo, front
at 101 evenly spread preferences. Behind `HypernetworkPSL.default_lr`.

    PYTHONPATH=. python benchmarks/hypernet_lr.py [--problems zdt1 zdt3] [--lrs 1e-2 3e-3 1e-3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from pymoo.indicators.hv import HV

from mooframe import solve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=["zdt1", "zdt3"])
    parser.add_argument("--solvers", nargs="+", default=["ls", "epo"])
    parser.add_argument("--lrs", nargs="+", type=float, default=[1e-2, 3e-3, 1e-3])
    args = parser.parse_args()
    hv = HV(ref_point=np.array([1.1, 1.1]))
    print(f"{'problem':>8} {'solver':>6} {'lr':>7} {'HV / true HV':>12} {'seconds':>8}")
    for problem in args.problems:
        for solver in args.solvers:
            for lr in args.lrs:
                start = time.perf_counter()
                result = solve(problem, model="hypernet", solver=solver, steps=1000, lr=lr, progress=False)
                ratio = hv(result.front(n=101).objectives) / hv(result.problem.true_front(1000))
                print(f"{problem:>8} {solver:>6} {lr:7.0e} {ratio:12.4f} {time.perf_counter() - start:8.1f}")


if __name__ == "__main__":
    main()
