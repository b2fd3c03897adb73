"""Mutation score of the core modules: mutmut, one module group at a time, against the fast tests that cover it.

    python benchmarks/mutation.py [--jobs 2] [--workdir DIR] [--out scores.json] [GROUP ...]   (default: all)
    python benchmarks/mutation.py --rerun --workdir DIR [GROUP ...]   (the survivors again, after new tests)

Each group is run in a scratch copy of the checkout (`--workdir`, default a new temporary directory), so mutmut's
`mutants/` folder never lands in the working tree. mutmut first runs the selected tests once to learn which tests
reach which function, then runs, for each mutant, only those tests (`-m "not slow"`, see [tool.mutmut] in
pyproject.toml). The score of a module is killed / (mutants - equivalent), where `EQUIVALENT` lists the mutants
that no test can kill, each with the reason (docs/mutation.md). Mutants that time out count as killed (the
mutation made the code hang), "no tests" ones as survivors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MERGING_MODELS = ("merging", "pwe_moe", "pareto_merging", "task_arithmetic", "baselines", "sweeps")
#: group -> (files mutated, fast test files that cover them)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "preferences": (["mooframe/preferences.py"], ["tests/test_preferences.py"]),
    "indicators": (["mooframe/indicators.py"], ["tests/test_indicators.py"]),
    "solvers": (
        ["mooframe/solvers/*"],
        ["tests/test_solvers.py", "tests/test_epo_paper.py", "tests/test_simplex.py"],
    ),
    "merging": (
        ["mooframe/merging/*"],
        ["tests/test_merging.py", "tests/test_lowrank.py", "tests/test_baselines.py"],
    ),
    "models": (  # the merging models (not the hypernetwork or one model per ray)
        [f"mooframe/models/{name}.py" for name in MERGING_MODELS],
        ["tests/test_pwe_moe.py", "tests/test_pareto_merging.py", "tests/test_baselines.py", "tests/test_lowrank.py"],
    ),
    "selection": (["mooframe/selection.py"], ["tests/test_selection.py"]),
    "report": (["mooframe/report.py"], ["tests/test_report.py", "tests/test_cli.py"]),
    "result": (
        ["mooframe/result.py"],
        [
            "tests/test_core.py",
            "tests/test_selection.py",
            "tests/test_report.py",
            "tests/test_safety.py",
            "tests/test_contracts.py",
            "tests/test_cli.py",
            "tests/test_result.py",
            "tests/test_pwe_moe.py",
            "tests/test_export.py",
        ],
    ),
    "checkpoint": (["mooframe/checkpoint.py"], ["tests/test_checkpoint.py", "tests/test_safety.py"]),
}

#: mutant name -> why no test can tell it from the original (the same behaviour for every input)
_AUTO_LABEL = "auto's choice is only compared with 'exact': any other spelling of 'approximate' takes the same branch"
_INTEGER_REF = (
    "the reference point's array keeps the caller's dtype: an integer one compares and is converted by moocore alike"
)
_NO_OBJECTIVES = "changes only the T = 0 branch, where both versions raise (no solver is ever reset with T = 0)"
_RENORMALIZED = (
    "the affine coefficients are divided by their sum at the end, which undoes any scaling of the KKT system"
)
_HIGHS_INDEX_DTYPE = "an index array's dtype left to numpy (int64): highspy converts it to HiGHS's int, like int32"
_HIGHS_LONGER = "a longer index array: only its first entries (as many as the count passed beside it) are read"
_ZIP_STRICT = "zip's strict flag: the three cvxpy Parameters and the three fields of an LP always pair up"
_BANNER_FLAG = (
    "the 'banner hidden' flag not set: later models are also made with stdout pointed at /dev/null, and HiGHS "
    "prints its banner at the first model of a process only, so nothing else changes"
)
_UNREAD_OBJECTIVE = (
    "the tableau's objective-value cell (reduced[-1]) changed: it is updated at each pivot but never read; the "
    "answer is read from the slacks' reduced costs"
)
_LINEAR_DTYPE = (
    "the low-rank term's dtype chosen from x or from W_0 alone: F.linear(x, W_0) raises unless x is a floating "
    "tensor of W_0's dtype, so the two agree whenever the call succeeds"
)
_NEEDS_GRAD_ZIP = "zip's strict flag: needs_input_grad holds one entry per vector after the three first inputs"
_COEFFICIENTS_ZIP = "zip's strict flag: the coefficients were checked to have one entry per task vector"
_SQUEEZED_ROW = "the row's size passed with squeeze=True: _rows then returns inputs[start] and ignores the size"
_LP_KIND = (
    "another LP kind passed to the backend: it only names the persistent HiGHS model (a warm start; every solve "
    "replaces its cost and rows), and the other backends ignore it"
)
_UNREAD_OUTSIDE_SUPPORT = (
    "the weights outside the support, set after pruning, are never read before the minor cycle's accepting branch "
    "(w[:] = 0, then the support's coefficients) overwrites them; the cycle always ends there"
)
_STEP_CAP = (
    "the minor cycle's step cap (initial=1.0) changed or dropped: some support point with a current weight > 0 has "
    "an affine coefficient <= 0 (its ratio is <= 1), or one in (0, 1e-3 tol], whose ratio exceeds 1 by at most "
    "1e-3 tol and which is dropped either way; the set of ratios is never empty (the entering point's coefficient "
    "is > 0 and the coefficients sum to 1 like the weights)"
)
EQUIVALENT: dict[str, str] = {
    "mooframe.solvers.epo.x_relaxed_lp__mutmut_8": (
        "C's row sums instead of its column sums: C is symmetric (the Gram matrix reaches a solver symmetrized)"
    ),
    "mooframe.solvers.epo.xǁEPOǁ_weights__mutmut_66": _LP_KIND,
    "mooframe.solvers.epo.xǁEPOǁ_weights__mutmut_93": _LP_KIND,
    "mooframe.solvers.epo.xǁEPOǁ_weights__mutmut_97": _LP_KIND,
    "mooframe.solvers.epo.xǁEPOǁ_weights__mutmut_98": _LP_KIND,
    "mooframe.solvers.epo.xǁEPOǁ_weights__mutmut_45": (
        "'max |a| <= 1e-12' -> '< 1e-12' in the vertex rule: differs only when max |a| equals 1e-12 to the last bit"
    ),
    "mooframe.solvers.epo.xǁEPOǁ_paper_alpha__mutmut_26": _LP_KIND,
    "mooframe.solvers.epo.x__paper_adjustment__mutmut_15": (
        "np.finfo(None) is float64's, and l_hat is always float64 (EPO converts r and the losses to float64)"
    ),
    "mooframe.solvers.epo.x_descent_lp__mutmut_9": (
        "C's row sums instead of its column sums: C is symmetric (the Gram matrix reaches a solver symmetrized)"
    ),
    "mooframe.solvers.epo.x_non_uniformity__mutmut_8": (
        "'l_hat > 1e-12' -> '>=': differs only when an l_hat equals 1e-12 to the last bit"
    ),
    "mooframe.solvers.simplex.x_simplex_lp__mutmut_34": _UNREAD_OBJECTIVE,
    "mooframe.solvers.simplex.x_simplex_lp__mutmut_37": _UNREAD_OBJECTIVE,
    "mooframe.solvers.simplex.x_simplex_lp__mutmut_44": "Bland's flag starts as None instead of False: both falsy",
    "mooframe.solvers.simplex.x_simplex_lp__mutmut_57": (
        "Bland's entering rule 'cost < -tol' -> '<=': differs only when a reduced cost equals -1e-11 to the last bit"
    ),
    "mooframe.solvers.simplex.x_simplex_lp__mutmut_60": (
        "the optimality test 'cost >= -tol' -> '>': differs only when the least reduced cost equals -1e-11 to the bit"
    ),
    "mooframe.merging.fisher.x_diagonal_fisher__mutmut_11": (
        "vmap's chunk_size dropped: the loop around it already passes at most chunk_size examples per call"
    ),
    "mooframe.merging.fisher.x_diagonal_fisher__mutmut_8": "vmap's chunk_size=None: the loop around it already chunks",
    "mooframe.merging.fisher.x_diagonal_fisher__mutmut_23": _SQUEEZED_ROW,
    "mooframe.merging.fisher.x_diagonal_fisher__mutmut_29": _SQUEEZED_ROW,
    "mooframe.merging.fisher.x_fisher_merge__mutmut_33": "zip's strict flag: one Fisher per state was checked",
    "mooframe.merging.fisher.x_fisher_merge__mutmut_36": "zip's strict flag: one Fisher per state was checked",
    "mooframe.merging.fisher.x_fisher_merge__mutmut_37": "zip's strict flag: one Fisher per state was checked",
    "mooframe.merging.vectors.xǁ_Mergeǁforward__mutmut_20": (
        "zip's strict flag: the coefficients were checked to have one entry per tensor merged"
    ),
    "mooframe.merging.vectors.xǁ_Mergeǁforward__mutmut_21": (
        "zip's strict flag: the coefficients were checked to have one entry per tensor merged"
    ),
    "mooframe.merging.lowrank.xǁLowRankTaskVectorsǁ__init____mutmut_47": (
        "torch.full's dtype=torch.long dropped: an integer fill value gives torch.long (int64) already"
    ),
    "mooframe.merging.lowrank.xǁLowRankTaskVectorsǁ__init____mutmut_3": "persistent=None instead of False: both falsy",
    "mooframe.merging.lowrank.xǁLowRankMergedWeightǁlinear__mutmut_3": _LINEAR_DTYPE,
    "mooframe.merging.lowrank.xǁLowRankMergedWeightǁlinear__mutmut_4": _LINEAR_DTYPE,
    "mooframe.merging.lowrank.x__linear_arguments__mutmut_5": "zip's strict=None instead of False: both falsy",
    "mooframe.merging.lowrank.x__linear_arguments__mutmut_8": "zip's strict=False dropped: False is its default",
    "mooframe.merging.vectors.x_add_weighted__mutmut_4": "from_experts=None instead of False: both falsy",
    "mooframe.merging.vectors.xǁ_Mergeǁbackward__mutmut_26": (
        "the coefficients' gradient left in the gradient's dtype: autograd casts a Function's gradients to the "
        "input's dtype"
    ),
    "mooframe.merging.vectors.xǁ_Mergeǁbackward__mutmut_29": (
        "gradients also computed for the vectors that need none: autograd ignores a gradient returned for an input "
        "that does not require one"
    ),
    "mooframe.merging.vectors.xǁ_Mergeǁbackward__mutmut_35": _NEEDS_GRAD_ZIP,
    "mooframe.merging.vectors.xǁ_Mergeǁbackward__mutmut_39": _NEEDS_GRAD_ZIP,
    "mooframe.merging.vectors.xǁ_Mergeǁbackward__mutmut_41": _NEEDS_GRAD_ZIP,
    "mooframe.merging.regmean.x_regmean_weight__mutmut_15": "zip's strict flag: one Gram matrix per weight was checked",
    "mooframe.merging.regmean.x_regmean_weight__mutmut_18": "zip's strict flag: one Gram matrix per weight was checked",
    "mooframe.merging.regmean.x_regmean_weight__mutmut_19": "zip's strict flag: one Gram matrix per weight was checked",
    "mooframe.merging.vectors.x_task_arithmetic__mutmut_23": _COEFFICIENTS_ZIP,
    "mooframe.merging.vectors.x_task_arithmetic__mutmut_26": _COEFFICIENTS_ZIP,
    "mooframe.merging.vectors.x_task_arithmetic__mutmut_27": _COEFFICIENTS_ZIP,
    "mooframe.merging.vectors.x_weight_average__mutmut_47": (
        "zip's strict flag: the coefficients were checked to have one entry per state"
    ),
    "mooframe.merging.vectors.xǁ_Mergeǁforward__mutmut_17": (
        "zip's strict flag: the coefficients were checked to have one entry per tensor merged"
    ),
    "mooframe.merging.vectors.xǁ_Mergeǁbackward__mutmut_30": (
        "a vector's gradient left in the gradient's dtype: autograd casts a Function's gradients to the input's dtype"
    ),
    "mooframe.solvers.mgda.x_min_norm_weights__mutmut_73": _UNREAD_OUTSIDE_SUPPORT,
    "mooframe.solvers.mgda.x_min_norm_weights__mutmut_76": _UNREAD_OUTSIDE_SUPPORT,
    "mooframe.solvers.mgda.x_min_norm_weights__mutmut_58": (
        "'affine < current' -> '<=' in the minor cycle adds the points whose coefficient is unchanged: their ratio is "
        "inf (no effect on the min), or 0/0 for the entering point, whose coefficient is > 0 since it entered with "
        "a duality gap above tol"
    ),
    "mooframe.solvers.mgda.x_min_norm_weights__mutmut_61": _STEP_CAP,
    "mooframe.solvers.mgda.x_min_norm_weights__mutmut_63": _STEP_CAP,
    "mooframe.solvers.mgda.x_min_norm_weights__mutmut_66": _STEP_CAP,
    "mooframe.solvers.mgda.x_min_norm_weights__mutmut_72": (
        "'w > floor' -> '>=' when pruning the support: differs only when a weight equals 1e-3 tol to the last bit"
    ),
    "mooframe.solvers.mgda.x_min_norm_weights__mutmut_77": (
        "w * sum(w) instead of w / sum(w) at the end: w already sums to 1 but for rounding (the minor cycle keeps "
        "w a convex combination and zeroes only weights below 1e-3 tol)"
    ),
    "mooframe.solvers.lp_backends.xǁHighsLPsǁsolve__mutmut_11": _HIGHS_INDEX_DTYPE,
    "mooframe.solvers.lp_backends.xǁHighsLPsǁsolve__mutmut_13": _HIGHS_INDEX_DTYPE,
    "mooframe.solvers.lp_backends.xǁHighsLPsǁsolve__mutmut_42": _HIGHS_INDEX_DTYPE,
    "mooframe.solvers.lp_backends.xǁHighsLPsǁsolve__mutmut_44": _HIGHS_INDEX_DTYPE,
    "mooframe.solvers.lp_backends.xǁHighsLPsǁsolve__mutmut_69": _HIGHS_INDEX_DTYPE,
    "mooframe.solvers.lp_backends.xǁHighsLPsǁsolve__mutmut_72": _HIGHS_INDEX_DTYPE,
    "mooframe.solvers.lp_backends.xǁHighsLPsǁsolve__mutmut_46": _HIGHS_LONGER + " (row starts: at most T + 1 rows)",
    "mooframe.solvers.lp_backends.xǁHighsLPsǁsolve__mutmut_52": _HIGHS_LONGER + " (column indices)",
    "mooframe.solvers.lp_backends.xǁHighsLPsǁsolve__mutmut_75": _HIGHS_LONGER + " (rows deleted: `old` of them)",
    "mooframe.solvers.lp_backends.xǁCvxpyLPsǁsolve__mutmut_30": _ZIP_STRICT,
    "mooframe.solvers.lp_backends.xǁCvxpyLPsǁsolve__mutmut_33": _ZIP_STRICT,
    "mooframe.solvers.lp_backends.xǁCvxpyLPsǁsolve__mutmut_34": _ZIP_STRICT,
    "mooframe.solvers.lp_backends.x__silent_highs__mutmut_25": _BANNER_FLAG,
    "mooframe.solvers.lp_backends.x__silent_highs__mutmut_26": _BANNER_FLAG,
    "mooframe.preferences.x_check_preference__mutmut_19": (
        "'> 1e-6' -> '>= 1e-6' on |sum - 1|: near 1 that difference is a multiple of 2^-53, and the float 1e-6 is "
        "not (1e-6 / 2^-53 = 9007199254.74), so the two comparisons never differ"
    ),
    "mooframe.indicators.x_as_points__mutmut_21": (
        "reshape(-2, T) instead of reshape(-1, T): numpy (2.x) takes any negative size as the one unknown dimension"
    ),
    "mooframe.indicators.x_hypervolume__mutmut_65": _AUTO_LABEL,
    "mooframe.indicators.x_hypervolume__mutmut_66": _AUTO_LABEL,
    "mooframe.indicators.x_hypervolume__mutmut_8": _INTEGER_REF,
    "mooframe.indicators.x_hypervolume__mutmut_10": _INTEGER_REF,
    "mooframe.indicators.x_hypervolume__mutmut_38": (
        "points on the reference box's boundary kept ('<' -> '<='): they dominate a set of zero volume, so the "
        "value is the same, exact (an all-boundary set gives moocore's exact 0 instead of the early 0)"
    ),
    "mooframe.solvers.mgda.x_min_norm_weights__mutmut_5": _NO_OBJECTIVES,
    "mooframe.solvers.mgda.x_min_norm_weights__mutmut_9": _NO_OBJECTIVES,
    "mooframe.solvers.mgda.x_min_norm_weights__mutmut_30": (
        "the start weight 2 instead of 1: the first minor cycle replaces w by affine coefficients summing to 1, "
        "or (no descent from the start vertex) the loop returns w / sum(w) = e_start; only the work differs"
    ),
    "mooframe.solvers.mgda.x_min_norm_weights__mutmut_40": (
        "'gap <= tol' -> 'gap < tol': differs only when the duality gap equals tol to the last bit"
    ),
    "mooframe.solvers.mgda.x_min_norm_weights__mutmut_51": (
        "'affine > floor' -> '>= floor': differs only when a coefficient equals 1e-15 to the last bit"
    ),
    "mooframe.solvers.mgda.x__affine_min_norm__mutmut_31": "lstsq's rcond=None dropped: its default (numpy >= 2)",
    "mooframe.solvers.mgda.x__affine_min_norm__mutmut_7": (
        "a zero column added to the KKT matrix: np.linalg.solve refuses the non-square system and lstsq's "
        "minimum-norm solution of [K 0] x = b is (K^-1 b, 0), the same coefficients"
    ),
    "mooframe.solvers.mgda.x__affine_min_norm__mutmut_14": _RENORMALIZED + " (ones -> twos in the sum row/column)",
    "mooframe.solvers.mgda.x__affine_min_norm__mutmut_20": _RENORMALIZED + " (right-hand side 1 -> 2)",
    "mooframe.solvers.mgda.x__affine_min_norm__mutmut_22": (
        "np.linalg.solve(None, ...) raises LinAlgError, and the lstsq fallback solves the same non-singular system"
    ),
    "mooframe.solvers.mgda.x__affine_min_norm__mutmut_33": (
        "the KKT system already makes the coefficients sum to 1: multiplying by their sum changes them by rounding only"
    ),
}

KILLED = {"killed", "timeout", "segfault", "caught by type check"}


def run_group(group: str, jobs: int, workdir: Path, sample: int | None = None, seed: int = 0) -> dict[str, str]:
    """Mutant name -> mutmut's status for one group, run in a fresh copy of the checkout under `workdir`: every
    mutant, or a uniform random sample of `sample` of them (`random.Random(seed)`)."""
    files, tests = GROUPS[group]
    copy = workdir / group
    if copy.exists():
        shutil.rmtree(copy)
    for name in _checkout_files():
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    pyproject = (copy / "pyproject.toml").read_text()
    scoped = f"only_mutate = {json.dumps(files)}\npytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
    pyproject = re.sub(r"only_mutate = \[.*?\]\n", scoped, pyproject, flags=re.S)
    (copy / "pyproject.toml").write_text(pyproject)
    mutmut = [sys.executable, "-m", "mutmut"]
    names = [] if sample is None else sample_mutants(copy, files, sample, seed)
    subprocess.run(
        [*mutmut, "run", "--max-children", str(jobs), *names], cwd=copy, check=True, stdout=subprocess.DEVNULL
    )
    statuses = _statuses(copy)
    return statuses if sample is None else {name: statuses[name] for name in names}


def sample_mutants(copy: Path, patterns: list[str], k: int, seed: int) -> list[str]:
    """A uniform random sample of k of the mutants mutmut generates for the files matching `patterns` in `copy`."""
    from mutmut.configuration import reset_config
    from mutmut.mutation.file_mutation import mutate_file_contents
    from mutmut.utils.format_utils import get_mutant_name

    names = []
    with contextlib.chdir(copy):  # mutmut reads its settings from the copy's pyproject.toml
        reset_config()
        for path in sorted({p for pattern in patterns for p in Path().glob(pattern) if p.suffix == ".py"}):
            mutated = mutate_file_contents(str(path), path.read_text())
            names += [get_mutant_name(path, name) for name in mutated.mutant_names]
    return sorted(random.Random(seed).sample(sorted(names), min(k, len(names))))


def rerun(group: str, names: list[str], jobs: int, workdir: Path) -> dict[str, str]:
    """Re-run the mutants `names` in the group's scratch copy, with the checkout's current tests (the source must
    be unchanged: mutmut regenerates and re-runs the mutants of any function whose code changed)."""
    copy = workdir / group
    for name in _checkout_files("tests", "benchmarks"):
        for target in (copy / name, copy / "mutants" / name):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
    mutmut = [sys.executable, "-m", "mutmut"]
    if names:
        subprocess.run([*mutmut, "run", "--max-children", str(jobs), *names], cwd=copy, check=True)
    return _statuses(copy)


def _checkout_files(*folders: str) -> list[str]:
    """The checkout's tracked and untracked-but-not-ignored files (under `folders`, or all), relative to ROOT."""
    command = ["git", "ls-files", "-co", "--exclude-standard", *folders]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()


def _statuses(copy: Path) -> dict[str, str]:
    command = [sys.executable, "-m", "mutmut", "results", "--all", "true"]
    lines = subprocess.run(command, cwd=copy, capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"^\s*(\S+): (.+?)\s*$", lines, flags=re.M))


def module_of(mutant: str) -> str:
    """'mooframe.solvers.epo.xǁEPOǁweights__mutmut_3' -> 'mooframe.solvers.epo'."""
    return re.split(r"\.x[_ǁ]", mutant, maxsplit=1)[0]


def scores(statuses: dict[str, str]) -> dict[str, dict[str, float]]:
    """Per module: counts by status, equivalent mutants, and the score killed / (mutants - equivalent)."""
    table: dict[str, Counter] = defaultdict(Counter)
    for mutant, status in statuses.items():
        row = table[module_of(mutant)]
        row["mutants"] += 1
        row["equivalent" if mutant in EQUIVALENT else "killed" if status in KILLED else "survived"] += 1
    out = {}
    for module, row in sorted(table.items()):
        counted = row["mutants"] - row["equivalent"]
        counts = {key: row[key] for key in ("mutants", "killed", "survived", "equivalent")}
        out[module] = {**counts, "score": row["killed"] / counted if counted else 1.0}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("groups", nargs="*", default=["all"], help=f"all, or some of: {', '.join(GROUPS)}")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested in parallel (default 2)")
    parser.add_argument("--workdir", type=Path, help="where the scratch copies go (default: a temporary directory)")
    parser.add_argument("--out", type=Path, help="also write the statuses and scores as JSON here")
    parser.add_argument("--sample", type=int, help="run a uniform random sample of this many mutants per group")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    parser.add_argument(
        "--rerun",
        action="store_true",
        help="re-run each group's survivors in its existing scratch copy (under --workdir) with the current tests",
    )
    args = parser.parse_args()
    groups = list(GROUPS) if args.groups == ["all"] else args.groups
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown groups {unknown}; pass some of {', '.join(GROUPS)} or all")
    if args.rerun and not args.workdir:
        parser.error("--rerun needs the --workdir of the first run")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mooframe-mutation-"))
    statuses: dict[str, str] = {}
    for group in groups:
        if args.rerun:
            previous = _statuses(workdir / group)
            survivors = [m for m, s in previous.items() if s not in KILLED and m not in EQUIVALENT]
            statuses.update(rerun(group, survivors, args.jobs, workdir))
        else:
            statuses.update(run_group(group, args.jobs, workdir, args.sample, args.seed))
        print(f"{group}: {len(statuses)} mutants so far (scratch copy in {workdir / group})", flush=True)
    table = scores(statuses)
    print(f"{'module':32} {'mutants':>8} {'killed':>7} {'survived':>9} {'equivalent':>11} {'score':>6}")
    for module, row in table.items():
        print(
            f"{module:32} {row['mutants']:8d} {row['killed']:7d} {row['survived']:9d} {row['equivalent']:11d}"
            f" {row['score']:6.1%}"
        )
    survivors = sorted(m for m, s in statuses.items() if s not in KILLED and m not in EQUIVALENT)
    if survivors:
        print("survivors (mutmut show NAME in the group's scratch copy):", *survivors, sep="\n  ")
    if args.out:
        args.out.write_text(json.dumps({"statuses": statuses, "scores": table}, indent=1))


if __name__ == "__main__":
    main()
