"""`mooframe demo`: PWE-MoE (LS and EPO) against merging baselines on an embedded problem, in one report.

The problem family is multi-task digits (vision, the default) or the digit-string language-model tasks
(`--family lm`: copy, reverse, sort with a tiny Llama-style decoder). On 2 and 3 of its tasks it trains PWE-MoE
with linear scalarization and with EPO, and Pareto Merging with smooth Tchebycheff (with its base merge alone beside
it), evaluates them beside preference-weighted task arithmetic, TIES, the paper's single-model baselines (weight
averaging, Fisher merging (digits only), RegMean: one point each), the individual experts and, on 2 tasks, one LS
fine-tuned model per ray (K = 5), and writes report.md with HV, accuracies at the unit and equal preferences,
trainable parameters, wall time and peak memory per method, and a plot of the fronts per task count.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset
from tqdm.auto import tqdm

from mooframe.atomic import DEMO, check_output, marker, staged_directory
from mooframe.front import Front
from mooframe.models.baselines import FixedMerge
from mooframe.models.pwe_moe import PWEMoE
from mooframe.pareto_set import FunctionalModel
from mooframe.preferences import equal_preference
from mooframe.problems.digits import DEFAULT_TASKS, MultiTaskDigits, torch_threads
from mooframe.problems.lm_default import DEFAULT_TASKS as LM_TASKS
from mooframe.problems.lm_default import DigitStringTasks
from mooframe.problems.merging import MergingProblem
from mooframe.report import compare_fronts, evaluation_preferences, write_report
from mooframe.result import ParetoSetResult
from mooframe.solve import solve
from mooframe.solvers.epo import non_uniformity

#: label -> (registered model, solver, model kwargs, solve kwargs overriding the demo's steps and lr).
METHODS: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    "PWE-MoE (LS)": ("pwe_moe", "ls", {"upscale": "attention_mlp"}, {}),
    "PWE-MoE (EPO)": ("pwe_moe", "epo", {"upscale": "attention_mlp"}, {}),
    "task arithmetic": ("task_arithmetic", "ls", {}, {"steps": 0}),
    "TIES": ("ties", "ls", {}, {"steps": 0}),
    "weight averaging": ("weight_average", "ls", {}, {"steps": 0}),
    "Fisher merging": ("fisher_merging", "ls", {}, {"steps": 0}),
    "RegMean": ("regmean", "ls", {}, {"steps": 0}),
    "per-ray LS (K=5)": ("per_ray", "ls", {"rays": 5}, {"lr": 1e-3}),
    "Pareto Merging (STCH)": ("pareto_merging", "smooth_tchebycheff", {"rank": 4}, {}),
    "Pareto Merging base merge": ("pareto_merging", "ls", {"rank": 0}, {"steps": 0}),
}
#: The language-model family's methods: Fisher merging's per-example Fisher is written for one label per example;
#: PWE-MoE also routes the embeddings (tied to the output head), which the full experts fine-tune as much as a block
#: (merged once by task arithmetic, PWE-MoE (LS) falls short of task arithmetic's HV on three tasks).
LM_METHODS = {
    label: (model, solver, {**kwargs, "upscale": "attention_mlp_embeddings"} if model == "pwe_moe" else kwargs, run)
    for label, (model, solver, kwargs, run) in METHODS.items()
    if label != "Fisher merging"
}
#: Run on two tasks only: five rays cannot cover the 2-simplex of three tasks (its front there was the lowest of all
#: methods, docs/benchmarks.md); a fair per-ray baseline would need one model per evaluated preference.
TWO_TASKS_ONLY = frozenset({"per-ray LS (K=5)"})
TASK_COUNTS = {"two_tasks": 2, "three_tasks": 3}


def digits_problem(n_tasks: int, seed: int, progress: bool) -> MergingProblem:
    return MultiTaskDigits(tasks=DEFAULT_TASKS[:n_tasks], seed=seed, progress=progress)


def lm_problem(n_tasks: int, seed: int, progress: bool) -> MergingProblem:
    return DigitStringTasks(tasks=LM_TASKS[:n_tasks], seed=seed, batch_size=LM_BATCH_SIZE, progress=progress)


#: Dirichlet concentration of the training preferences. Below the paper's alpha = 1 more preferences are drawn
#: near the simplex's vertices, where PWE-MoE (LS) on the digits tasks otherwise falls short of the experts' gain at
#: e_t (figures in docs/benchmarks.md, the demo's section).
ALPHA = 0.2
#: The language-model family's batch per task (the paper's 16) and Dirichlet concentration: with alpha 0.2 or
#: 0.05 instead of 0.1 PWE-MoE (LS) falls short of task arithmetic's HV on three tasks (docs/benchmarks.md, issue 19).
LM_BATCH_SIZE, LM_ALPHA = 16, 0.1


@dataclass(frozen=True)
class Family:
    """A demo problem family: its first-n-tasks problem, report title, methods and training defaults (`steps` per
    dimension of the preference simplex, Adam's `lr`, the Dirichlet `alpha` of the training preferences)."""

    problem: Callable[[int, int, bool], MergingProblem]
    title: str
    methods: Mapping[str, tuple[str, str, dict[str, Any], dict[str, Any]]]
    steps: int
    lr: float = 1e-2
    alpha: float = ALPHA


FAMILIES = {
    "digits": Family(digits_problem, "multi-task digits", METHODS, 1000),
    "lm": Family(
        lm_problem, "digit-string language-model tasks (copy, reverse, sort)", LM_METHODS, 400, 3e-2, LM_ALPHA
    ),
}


@dataclass
class MethodRun:
    """One method's evaluated front and what it cost."""

    front: Front
    trainable_parameters: int
    train_seconds: float
    eval_seconds: float
    peak_memory_mb: float | None
    result: ParetoSetResult | None = None  # the trained set (None for the experts)
    train_ray_deviation: float | None = None  # `ray_deviation` of the front on the training losses


def run_methods(
    problem: MergingProblem,
    steps: int,
    seed: int = 0,
    progress: bool = True,
    methods: Mapping[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = METHODS,
    lr: float = 1e-2,
    alpha: float = ALPHA,
) -> dict[str, MethodRun]:
    """Train and evaluate `methods` and the experts on `problem` (one thread: the model is tiny)."""
    with torch_threads(1):
        runs = {
            label: run_method(problem, spec, steps, seed, progress, lr=lr, alpha=alpha)
            for label, spec in methods.items()
        }
        runs["experts"] = _experts(problem)
    return runs


def run_method(
    problem: MergingProblem,
    spec: tuple[str, str, dict[str, Any], dict[str, Any]],
    steps: int,
    seed: int = 0,
    progress: bool = True,
    device: str = "cpu",
    lr: float = 1e-2,
    alpha: float = ALPHA,
) -> MethodRun:
    """Train one method of `METHODS` form (model, solver, model kwargs, solve kwargs) and evaluate its front;
    `lr` and `alpha` go to solve() unless the method's solve kwargs set them."""
    model, solver, model_kwargs, solve_kwargs = spec
    prefs = evaluation_preferences(problem.n_objectives, 11)
    with peak_memory() as peak:
        start = time.perf_counter()
        result = solve(
            problem,
            model=model,
            solver=solver,
            seed=seed,
            progress=progress,
            device=device,
            model_kwargs=model_kwargs,
            **{"steps": steps, "lr": lr, "alpha": alpha, **solve_kwargs},
        )
        trained = time.perf_counter()
        # a single merged model (weight averaging, Fisher, RegMean) is the same at every preference: one point
        single = isinstance(result.model, FixedMerge)
        front = result.front(equal_preference(problem.n_objectives)[None] if single else prefs, progress=progress)
    evaluated = time.perf_counter()
    trainable = sum(p.numel() for p in result.model.trainable_parameters())
    interior = prefs[np.all(prefs > 0, axis=1)]  # the only preferences the ray deviation reads
    # only for trained methods: it tells how well a solver met the rays on the losses it saw (estimated on as many
    # training examples per task as the test split holds)
    sample = max(len(data) for data in problem.test_data)
    train_deviation = ray_deviation(training_front(result, interior, sample)) if trainable and len(interior) else None
    return MethodRun(front, trainable, trained - start, evaluated - trained, peak.mb, result, train_deviation)


def expert_front(problem: MergingProblem) -> Front:
    """The T experts as a front: expert t at the unit preference e_t."""
    evaluations = [problem.evaluate(FunctionalModel(problem.pretrained, s)) for s in problem.expert_states]
    return Front(
        prefs=np.eye(problem.n_objectives),
        objectives=np.stack([e.objectives for e in evaluations]),
        objective_names=list(problem.objective_names),
        metrics={name: np.stack([e.metrics[name] for e in evaluations]) for name in evaluations[0].metrics},
    )


def ray_deviation(front: Front) -> float | None:
    """Mean EPO non-uniformity mu(r l) of the front's cross-entropies l over its interior preferences.

    mu(r l) = sum_t l_hat_t log(T l_hat_t) with l_hat = r l / sum(r l): 0 exactly on the preference ray.
    """
    interior = np.all(front.prefs > 0, axis=1)
    if not interior.any():
        return None
    rays, losses = front.prefs[interior], front.metrics["loss"][interior]
    return float(np.mean([non_uniformity(r * loss) for r, loss in zip(rays, losses, strict=True)]))


def training_front(result: ParetoSetResult, prefs: np.ndarray | list, sample: int | None = None) -> Front:
    """`result`'s front at `prefs` evaluated on its merging problem's training data instead of its test data: all of
    it, or a fixed sample of at most `sample` examples of each task (the first of a permutation seeded with 0)."""
    problem = result.problem
    train = problem.train_data if sample is None else [_sampled(data, sample) for data in problem.train_data]
    test_data, problem.test_data = problem.test_data, train
    try:
        return result.front(prefs)
    finally:
        problem.test_data = test_data


def _sampled(data: Dataset, size: int) -> Dataset:
    """The first `size` examples of a seeded permutation of `data` (a TensorDataset stays one, indexed at once)."""
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:size]
    if isinstance(data, TensorDataset):
        return TensorDataset(*(tensor[index] for tensor in data.tensors))
    return Subset(data, index.tolist())


def run_demo(
    out: str | Path = "runs/demo",
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
    methods: Mapping[str, tuple[str, str, dict[str, Any], dict[str, Any]]] | None = None,
    workers: int | None = None,
    device: str = "cpu",
    family: str = "digits",
) -> Path:
    """Build the problem, run `methods` on 2 and 3 tasks, write `out`/report.md (+ plots); return its path.

    Each trained method runs `steps` steps per dimension of the preference simplex (T - 1): the routers see as
    many preferences per direction of it on 3 tasks as on 2 (with the 2-task budget on 3 tasks PWE-MoE (LS) falls
    short of expert 1's gain at e_1; figures in docs/benchmarks.md). The methods run in `workers` processes of one
    thread each (default: one per CPU core, at most one per method); each is timed and measured in its own process,
    and trains and is evaluated on `device`. `family` names the problem ("digits" or "lm", `FAMILIES`); `methods`
    and `steps` default to the family's. `out` must be new, empty or a demo report mooframe wrote (checked first); it is
    replaced atomically at the end.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown demo family {family!r}; pass one of {', '.join(FAMILIES)}")
    out = check_output(out, DEMO)  # before an hour of training, not after
    defaults = FAMILIES[family]
    methods = defaults.methods if methods is None else methods
    steps = defaults.steps if steps is None else steps
    work = [  # the longest first
        (family, folder, label, n_tasks, seed, spec, steps, device)
        for folder, n_tasks in reversed(TASK_COUNTS.items())
        for label, spec in methods.items()
        if n_tasks == 2 or label not in TWO_TASKS_ONLY
    ]
    runs: dict[str, dict[str, MethodRun]] = {folder: {} for folder in TASK_COUNTS}
    workers = max(1, min(workers or os.cpu_count() or 1, len(work)))
    # spawn, not fork: a forked child inherits torch's thread pools in whatever state the parent left them;
    # the workers start (and import) while the problems are built; leaving the block on an error or Ctrl-C
    # terminates them
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_started) as pool:
        problems = {  # built (or read from the cache) here, once, before the workers read it
            folder: defaults.problem(n, seed, progress) for folder, n in TASK_COUNTS.items()
        }
        done = pool.imap_unordered(_run_job, work)
        for folder, label, run in tqdm(done, total=len(work), desc="demo methods", disable=not progress):
            runs[folder][label] = run
        pool.close()  # let the workers exit on their own: a terminated one leaves its semaphores to a warning
        pool.join()
    sections = [
        f"# mooframe demo: {defaults.title}",
        f"Trained methods run {steps} steps per dimension of the preference simplex, {steps} on 2 tasks and "
        f"{2 * steps} on 3 (Adam, learning rate {defaults.lr:g} unless the method sets its own, Dirichlet alpha "
        f"{defaults.alpha}, seed {seed}; PWE-MoE's learning rate warms up over {PWEMoE.default_warmup_steps} steps "
        "or a tenth of the steps, whichever is fewer); objectives are test errors 1 - accuracy; ray deviation is the "
        "mean EPO non-uniformity of the losses at interior preferences, on the training split for trained methods "
        "(the losses the solvers see; a fixed sample as large as the test split) and on the test split. Per-ray LS "
        "runs on 2 tasks only: 5 rays cannot cover the simplex of 3.",
    ]
    with staged_directory(out, DEMO) as staging:
        for folder, problem in problems.items():
            with torch_threads(1):
                ordered = {label: runs[folder][label] for label in methods if label in runs[folder]}
                ordered |= {"experts": _experts(problem)}
            fronts = {label: run.front for label, run in ordered.items()}
            extras = {label: _extras(run) for label, run in ordered.items()}
            comparison = compare_fronts(fronts, extras=extras)
            title = f"{problem.n_objectives} tasks: {', '.join(problem.task_names)}"
            write_report(comparison, fronts, staging / folder, title=title)
            sections += [f"## {title}", comparison.markdown(title).split("\n", 1)[1], f"![fronts]({folder}/fronts.png)"]
            if progress:
                print(comparison.text())
        (staging / "report.md").write_text("\n\n".join(sections) + "\n")
        (staging / DEMO.marker).write_text(
            marker(DEMO, steps=steps, seed=seed, methods=list(methods), family=family) + "\n"
        )
    return out / "report.md"


def _started() -> None:
    """A worker's initializer: naming it makes the new worker import this module (torch, the models) at once."""


def _run_job(job: tuple[str, str, str, int, int, tuple, int, str]) -> tuple[str, str, MethodRun]:
    """One method on the family's first n_tasks tasks, `steps` per simplex dimension, in a worker process (its
    trained set is not sent back)."""
    family, folder, label, n_tasks, seed, spec, steps, device = job
    defaults = FAMILIES[family]
    problem = defaults.problem(n_tasks, seed, False)
    with torch_threads(1):
        run = run_method(problem, spec, steps * (n_tasks - 1), seed, False, device, defaults.lr, defaults.alpha)
    return folder, label, replace(run, result=None)


@dataclass
class _Peak:
    mb: float | None = None


@contextmanager
def peak_memory(interval: float = 0.005) -> Iterator[_Peak]:
    """Peak resident memory of the process above its level at entry, in MB, sampled every `interval` seconds.

    Reads /proc/self/statm (Linux); elsewhere `mb` stays None. CPU tensors are not tracked by torch itself.
    """
    peak = _Peak()
    if not os.path.exists("/proc/self/statm"):
        yield peak
        return
    page = resource.getpagesize()
    start = highest = _rss_pages()
    done = threading.Event()

    def sample() -> None:
        nonlocal highest
        while not done.wait(interval):
            highest = max(highest, _rss_pages())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()
        peak.mb = (max(highest, _rss_pages()) - start) * page / 2**20


def _rss_pages() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1])


def _experts(problem: MergingProblem) -> MethodRun:
    start = time.perf_counter()
    front = expert_front(problem)
    theta_0 = problem.pretrained_state()
    tuned = sum(v.numel() for s in problem.expert_states for k, v in s.items() if not v.equal(theta_0[k]))
    return MethodRun(front, tuned, 0.0, time.perf_counter() - start, None)


def _extras(run: MethodRun) -> dict[str, Any]:
    return {
        "trainable params": run.trainable_parameters,
        "train (s)": round(run.train_seconds, 1),
        "eval (s)": round(run.eval_seconds, 1),
        "peak mem (MB)": None if run.peak_memory_mb is None else round(run.peak_memory_mb, 1),
        "ray dev. (train)": run.train_ray_deviation,
        "ray dev. (test)": ray_deviation(run.front),
    }
