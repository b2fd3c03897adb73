"""Solver speed and exactness, measured side by side in one run (CPU).

For T in {2, 3, 8}, on random Gram matrices G G^T (gradients of dimension 100):
- EPO: one weights() call, in both LP modes (balance: losses off the ray; descent: on it), with the LPs solved
  by the dense simplex method (mooframe.solvers.simplex, the default), by a persistent HiGHS model (highspy), by
  HiGHS through cvxpy compiled once per shape, by HiGHS through cvxpy rebuilt (so recompiled) every call, and by
  OSQP through cvxpy compiled once; "LP ms" is the time HiGHS itself reports inside cvxpy, the rest of a cvxpy
  call is cvxpy's per-call work. Agreement: the largest gap between the simplex method's optimal LP value and
  HiGHS direct's (default tolerances), and HiGHS's at feasibility tolerances 1e-10 (scipy's linprog).
- EPO backends in training: ZDT2 with the hypernetwork (hidden 64, 300 steps, lr 1e-2), each backend in turn,
  twice: seconds per run, HV ratio to the true front's, and LP fallbacks.
- MGDA: the exact min-norm solver vs Frank-Wolfe iterations as in Sener & Koltun's MinNormSolver
  (at most 250 iterations, stop when a step moves the weights by < 1e-5), and Frank-Wolfe's objective gap.
The timed functions run in turn on each case, so load changes on a shared machine hit them alike.

    PYTHONPATH=. python benchmarks/solvers.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from pymoo.indicators.hv import HV
from scipy.optimize import linprog

from mooframe import solve
from mooframe.solvers.epo import EPO, adjustment, balance_lp, descent_lp, non_uniformity
from mooframe.solvers.lp_backends import BACKENDS, LP, CvxpyLPs, HighsLPs, SimplexLPs
from mooframe.solvers.mgda import min_norm_weights

REPEATS = 200


def interleaved_ms(fns: dict[str, Callable], cases: list[tuple]) -> dict[str, float]:
    """Median wall time of each fn(*case) in milliseconds, the fns taking turns on each case (after a warm-up)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn(*cases[0])
    for case in cases:
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(*case)
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * float(np.median(values)) for name, values in times.items()}


def random_grams(n: int, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    grads = [rng.normal(size=(n, 100)) * rng.uniform(0.1, 3.0, size=(n, 1)) for _ in range(count)]
    return [g @ g.T for g in grads]


def epo_cases(n: int, rng: np.random.Generator, on_ray: bool, count: int) -> list[tuple]:
    cases = []
    for gram in random_grams(n, rng, count):
        pref = rng.dirichlet(np.ones(n))
        losses = 1.0 / pref if on_ray else rng.uniform(0.5, 2.0, size=n)
        cases.append((torch.tensor(losses), torch.tensor(pref), torch.tensor(gram)))
    return cases


class CvxpyEPO(EPO):
    """EPO with its LPs solved by HiGHS through cvxpy: compiled once (the previous path), or rebuilt every call."""

    def __init__(self, rebuild: bool = False) -> None:
        super().__init__()
        self.rebuild = rebuild

    def _weights(self, losses, pref, gram):
        if self.rebuild or self._lps is None:
            self._lps = CvxpyLPs("HIGHS")
        return super()._weights(losses, pref, gram)


def case_lp(losses: torch.Tensor, pref: torch.Tensor, gram: torch.Tensor) -> LP:
    """The LP EPO solves first for this case (balance or descent)."""
    r, loss, c = pref.numpy(), losses.numpy(), gram.numpy() / gram.abs().max().item()
    a = adjustment(r, loss)
    return balance_lp(c, a, r * loss) if non_uniformity(r * loss) > EPO().eps else descent_lp(c, a)


def cvxpy_highs_lp_ms(cases: list[tuple]) -> float:
    """Median time HiGHS reports for the LP (cvxpy's solver_stats.solve_time) of each case, in milliseconds."""
    lps, times = CvxpyLPs("HIGHS"), []
    for case in cases:
        lp = case_lp(*case)
        lps.solve("lp", lp)
        times.append(lps.problems[lp.rows.shape][0].solver_stats.solve_time)
    return 1e3 * float(np.median(times))


def tight_highs_value(lp: LP) -> float | None:
    """HiGHS's optimal value at primal and dual feasibility tolerances 1e-10 (scipy's linprog); None if infeasible."""
    tight = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}
    n = len(lp.cost)
    res = linprog(
        -lp.cost, A_ub=-lp.rows, b_ub=-lp.lower, A_eq=np.ones((1, n)), b_eq=[1.0], method="highs", options=tight
    )
    return -res.fun if res.status == 0 else None


def simplex_gaps(cases: list[tuple]) -> tuple[float, float]:
    """Largest |optimal value of the simplex method - HiGHS's| over the cases' LPs: HiGHS direct, tight HiGHS."""
    simplex, highs, gaps = SimplexLPs(), HighsLPs(), ([0.0], [0.0])
    for case in cases:
        lp = case_lp(*case)
        alpha, reference, tight = simplex.solve("lp", lp), highs.solve("lp", lp), tight_highs_value(lp)
        if (alpha is None) != (reference is None) or (alpha is None) != (tight is None):
            return np.inf, np.inf  # one found the LP infeasible, the other did not
        if alpha is not None:
            gaps[0].append(abs(lp.cost @ (alpha - reference)))
            gaps[1].append(abs(lp.cost @ alpha - tight))
    return max(gaps[0]), max(gaps[1])


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
    print("EPO, one weights() call: dense simplex method (default) vs HiGHS direct vs HiGHS through cvxpy (compiled")
    print("once, rebuilt every call) vs OSQP through cvxpy (compiled once); ratios are to the simplex method, timed")
    print("in turn; gap: largest |LP value - simplex method's| of HiGHS direct and of HiGHS at tolerances 1e-10")
    print(
        f"{'T':>3} {'mode':>8} {'simplex ms':>10} {'highs ms':>9} {'highs/simplex':>13} {'cvxpy ms':>9} "
        f"{'cvxpy/simplex':>13} {'LP ms':>6} {'rebuilt ms':>10} {'rebuilt/simplex':>15} {'osqp ms':>8} "
        f"{'osqp/simplex':>12} {'gap highs':>9} {'gap tight':>9}"
    )
    for n in (2, 3, 8):
        for mode, on_ray in (("balance", False), ("descent", True)):
            cases = epo_cases(n, rng, on_ray, REPEATS)
            once = interleaved_ms(
                {
                    "simplex": EPO().weights,
                    "highs": EPO(backend="highs").weights,
                    "cvxpy": CvxpyEPO().weights,
                    "osqp": EPO(backend="osqp").weights,
                },
                cases,
            )
            rebuilt = interleaved_ms({"simplex": EPO().weights, "rebuilt": CvxpyEPO(rebuild=True).weights}, cases[:20])
            gap_highs, gap_tight = simplex_gaps(cases)
            print(
                f"{n:>3} {mode:>8} {once['simplex']:10.3f} {once['highs']:9.3f} "
                f"{once['highs'] / once['simplex']:12.1f}x {once['cvxpy']:9.3f} "
                f"{once['cvxpy'] / once['simplex']:12.1f}x {cvxpy_highs_lp_ms(cases):6.3f} {rebuilt['rebuilt']:10.3f} "
                f"{rebuilt['rebuilt'] / rebuilt['simplex']:14.1f}x {once['osqp']:8.3f} "
                f"{once['osqp'] / once['simplex']:11.1f}x {gap_highs:9.1e} {gap_tight:9.1e}"
            )
    print("\nEPO backends in training: ZDT2, hypernet hidden 64, 300 steps (two runs each, in turn)")
    hv = HV(ref_point=np.array([1.1, 1.1]))
    for _ in range(2):
        for backend in BACKENDS:
            start = time.perf_counter()
            result = solve(
                "zdt2",
                solver="epo",
                steps=300,
                lr=1e-2,
                progress=False,
                model_kwargs={"hidden": 64},
                solver_kwargs={"backend": backend},
            )
            seconds = time.perf_counter() - start
            ratio = hv(result.front(n=101).objectives) / hv(result.problem.true_front(1000))
            print(f"{backend:>6} {seconds:6.1f} s  HV ratio {ratio:.4f}  {result.settings['solver_stats']}")
    print("\nMGDA: exact min-norm (Wolfe) vs Frank-Wolfe (MinNormSolver); FW gap = (f_FW - f*) / f* over the draws")
    print(f"{'T':>3} {'exact ms':>9} {'FW ms':>8} {'FW/exact':>8} {'FW worst gap':>12} {'FW median gap':>13}")
    for n in (2, 3, 8):
        grams = [(gram,) for gram in random_grams(n, rng, REPEATS)]
        times = interleaved_ms({"exact": min_norm_weights, "fw": frank_wolfe}, grams)
        gaps = []
        for (gram,) in grams:
            w_exact, w_fw = min_norm_weights(gram), frank_wolfe(gram)
            best = w_exact @ gram @ w_exact
            gaps.append((w_fw @ gram @ w_fw - best) / best)
        print(
            f"{n:>3} {times['exact']:9.3f} {times['fw']:8.3f} {times['fw'] / times['exact']:7.2f}x "
            f"{max(gaps):12.2e} {np.median(gaps):13.2e}"
        )


if __name__ == "__main__":
    main()
