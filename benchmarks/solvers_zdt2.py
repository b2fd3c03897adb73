"""Does a solver reach the whole non-convex front of ZDT2 with the hypernetwork? HV ratio to the true front's.

Same settings as the spine's ZDT1 test (1000 steps, Adam, lr 1e-3, hidden 256); HV at ref (1.1, 1.1) by pymoo,
front at 101 evenly spread preferences. Linear scalarization only reaches the two ends of a concave front.

    PYTHONPATH=. python benchmarks/solvers_zdt2.py [solver ...]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from pymoo.indicators.hv import HV

from mooframe import solve


def main(solvers: list[str]) -> None:
    hv = HV(ref_point=np.array([1.1, 1.1]))
    print(f"{'solver':>20} {'HV / true HV':>12} {'seconds':>8}  solver stats")
    for name in solvers:
        start = time.perf_counter()
        result = solve("zdt2", model="hypernet", solver=name, steps=1000, lr=1e-3, progress=False)
        ratio = hv(result.front(n=101).objectives) / hv(result.problem.true_front(1000))
        seconds = time.perf_counter() - start
        print(f"{name:>20} {ratio:12.4f} {seconds:8.1f}  {result.settings['solver_stats']}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["epo", "ls", "smooth_tchebycheff", "tchebycheff"])
