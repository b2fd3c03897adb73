"""Hypervolume: mooframe's automatic method against pymoo's exact HV, measured side by side.

    python benchmarks/hypervolume.py              # time ratio and relative error, 8 objectives
    python benchmarks/hypervolume.py --calibrate  # refit the exact-cost model of mooframe.indicators

Points are drawn on the positive unit sphere (all mutually non-dominated: the hard case), ref = 1.1.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from pymoo.indicators.hv import HV

from mooframe.indicators import estimated_exact_seconds, hypervolume

CALIBRATION_SIZES = {5: (400, 1000, 2000), 6: (200, 400, 600), 7: (100, 150, 200), 8: (100, 150), 9: (50, 80)}


def sphere_points(n: int, m: int, seed: int = 0) -> np.ndarray:
    x = np.abs(np.random.default_rng(seed).normal(size=(n, m)))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


def compare(m: int, sizes: tuple[int, ...], exact_up_to: int) -> None:
    print(f"{m} objectives, ref = 1.1; pymoo = pymoo.indicators.hv.HV (exact)")
    print(f"{'n':>5} {'method':>12} {'auto s':>8} {'pymoo s':>9} {'speed-up':>9} {'rel. error':>11} {'std err':>9}")
    ref = np.full(m, 1.1)
    for n in sizes:
        points = sphere_points(n, m)
        result, auto_s = timed(hypervolume, points, ref)
        if n <= exact_up_to:
            exact, pymoo_s = timed(HV(ref_point=ref).do, points)
            error, label = abs(result.value - exact) / exact, f"{pymoo_s:9.2f}"
        else:  # too slow to run: the fitted cost model's extrapolation
            pymoo_s, error, label = estimated_exact_seconds(n, m), math.nan, f"~{estimated_exact_seconds(n, m):8.0f}"
        print(
            f"{n:5d} {result.method:>12} {auto_s:8.2f} {label} {pymoo_s / auto_s:9.1f}x {error:11.2e} "
            f"{result.std_error / result.value:9.1e}"
        )


def calibrate() -> None:
    rows = []
    for m, sizes in CALIBRATION_SIZES.items():
        for n in sizes:
            _, seconds = timed(hypervolume, sphere_points(n, m), np.full(m, 1.1), method="exact")
            rows.append((m, n, seconds))
            print(f"m={m} n={n:5d} exact {seconds:8.3f} s  model {estimated_exact_seconds(n, m):8.3f} s", flush=True)
    m, n, t = np.array(rows, dtype=float).T
    design = np.stack([np.ones_like(m), m, m * np.log(n), np.log(n)], axis=1)
    fit, *_ = np.linalg.lstsq(design, np.log(t), rcond=None)
    print("log t = a + b m + (c m + d) log n with (a, b, c, d) =", np.round(fit, 2).tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibrate", action="store_true", help="measure exact HV times and refit the cost model")
    args = parser.parse_args()
    if args.calibrate:
        calibrate()
    else:
        compare(8, (100, 150, 200, 500), exact_up_to=200)


if __name__ == "__main__":
    main()
