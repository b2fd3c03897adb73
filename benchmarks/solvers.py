"""Solver speed and exactness, measured side by side in one run (CPU).

For T in {2, 3, 8}, on random Gram matrices G G^T (gradients of dimension 100):
- EPO: one weights() call with the LPs compiled once per T, vs the same LPs rebuilt (so recompiled) every call,
  and the HiGHS vs OSQP backends; both LP modes (balance: losses off the ray, descent: losses on it).
- MGDA: the exact min-norm solver vs Frank-Wolfe iterations as in Sener & Koltun's MinNormSolver
  (250 iterations at most, stop when the step moves the weights by < 1e-5), and Frank-Wolfe's relative objective gap.

    PYTHONPATH=. python benchmarks/solvers.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from mooframe.solvers.epo import BACKENDS, EPO, _EPOPrograms
from mooframe.solvers.mgda import min_norm_weights

REPEATS = 200


def median_ms(fn, cases) -> float:
    """Median wall time of fn(*case) over the cases, in milliseconds (after one warm-up call)."""
    fn(*cases[0])
    times = []
    for case in cases:
        start = time.perf_counter()
        fn(*case)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def random_grams(n: int, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    grads = [rng.normal(size=(n, 100)) * rng.uniform(0.1, 3.0, size=(n, 1)) for _ in range(count)]
    return [g @ g.T for g in grads]


def epo_cases(n: int, rng: np.random.Generator, on_ray: bool) -> list[tuple]:
    cases = []
    for gram in random_grams(n, rng, REPEATS):
        pref = rng.dirichlet(np.ones(n))
        losses = 1.0 / pref if on_ray else rng.uniform(0.5, 2.0, size=n)
        cases.append((torch.tensor(losses), torch.tensor(pref), torch.tensor(gram)))
    return cases


class RebuiltEPO(EPO):
    """EPO whose LPs are built anew every call, so cvxpy compiles them every call (the published code's cost)."""

    def weights(self, losses, pref, gram=None):
        self._programs = _EPOPrograms(losses.numel(), BACKENDS[self.backend])
        return super().weights(losses, pref, gram)


def frank_wolfe(gram: np.ndarray, max_iter: int = 250, stop: float = 1e-5) -> np.ndarray:
    """Sener & Koltun's MinNormSolver.find_min_norm_element_FW, on the Gram matrix."""

    def line(v1v1: float, v1v2: float, v2v2: float) -> float:
        if v1v2 >= v1v1:
            return 0.999
        if v1v2 >= v2v2:
            return 0.001
        return -(v1v2 - v2v2) / (v1v1 + v2v2 - 2 * v1v2)

    n = len(gram)
    best = (np.inf, 0, 0, 0.0)
    for i in range(n):
        for j in range(i + 1, n):
            gamma = line(gram[i, i], gram[i, j], gram[j, j])
            cost = gram[j, j] + gamma * (gram[i, j] - gram[j, j])
            best = min(best, (cost, i, j, gamma))
    w = np.zeros(n)
    w[best[1]], w[best[2]] = best[3], 1 - best[3]
    for _ in range(max_iter if n > 2 else 0):
        k = int(np.argmin(gram @ w))
        gamma = line(w @ gram @ w, w @ gram[:, k], gram[k, k])
        new = gamma * w
        new[k] += 1 - gamma
        if np.abs(new - w).sum() < stop:
            break
        w = new
    return w


def main() -> None:
    rng = np.random.default_rng(0)
    print("EPO, one weights() call: compiled once vs rebuilt every call; HiGHS vs OSQP (both compiled once)")
    print(f"{'T':>3} {'mode':>8} {'once ms':>8} {'rebuilt ms':>10} {'speed-up':>8} {'osqp ms':>8} {'osqp/highs':>10}")
    for n in (2, 3, 8):
        for mode, on_ray in (("balance", False), ("descent", True)):
            cases = epo_cases(n, rng, on_ray)
            once = median_ms(EPO(backend="highs").weights, cases)
            rebuilt = median_ms(RebuiltEPO(backend="highs").weights, cases[:20])
            osqp = median_ms(EPO(backend="osqp").weights, cases)
            print(
                f"{n:>3} {mode:>8} {once:8.3f} {rebuilt:10.3f} {rebuilt / once:7.1f}x {osqp:8.3f} {osqp / once:9.2f}x"
            )
    print("\nMGDA: exact min-norm (Wolfe) vs Frank-Wolfe (MinNormSolver); gap = (f_FW - f*) / f*, worst over draws")
    print(f"{'T':>3} {'exact ms':>9} {'FW ms':>8} {'FW/exact':>8} {'FW worst gap':>12} {'FW median gap':>13}")
    for n in (2, 3, 8):
        grams = [(g,) for g in random_grams(n, rng, REPEATS)]
        exact = median_ms(min_norm_weights, grams)
        fw = median_ms(frank_wolfe, grams)
        gaps = []
        for (gram,) in grams:
            w_exact, w_fw = min_norm_weights(gram), frank_wolfe(gram)
            best = w_exact @ gram @ w_exact
            gaps.append((w_fw @ gram @ w_fw - best) / best)
        print(f"{n:>3} {exact:9.3f} {fw:8.3f} {fw / exact:7.2f}x {max(gaps):12.2e} {np.median(gaps):13.2e}")


if __name__ == "__main__":
    main()
