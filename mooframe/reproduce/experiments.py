"""The PWE-MoE paper's experiments as data: one JSON file per experiment in `experiments/`.

A file names the problem (a registered name and options), the task sets, how fronts are evaluated ("equal": the
equal preference; {"grid": n}: the uniform grid; a method may set its own, e.g. full fine-tuning at the equal
preference is one model), the batch size per task of methods that do not set their own, the methods with their
settings, and the paper's numbers: rows
`{"method", "row", "pref", "accuracy": {task: %}}` (`pref` "equal", "own" for each expert on its own task, "best"
for a lambda sweep at its best lambda, or a preference vector) and the experts' individual accuracies
(`paper_experts`, Tables 5-7).

A method is one of:
- `experts`: each expert on every task of the set;
- `merge`: a registered model with nothing to train (pretrained, weight_average, fisher_merging, regmean), one point;
- `sweep`: task arithmetic or TIES over lambda = 0, 0.1, ..., 1 (`mooframe.models.sweeps`);
- `train`: `solve()` with the model, solver and settings given (`solve`: steps, lr, optimizer, schedule, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

EXPERIMENTS_DIR = Path(__file__).parent / "experiments"
KINDS = ("experts", "merge", "sweep", "train")
#: What smoke mode changes: a few examples per split, a few steps, small batches, a coarse grid.
SMOKE = {"examples": 4, "steps": 2, "batch_size": 2, "grid": 3, "batches": 1}


@dataclass(frozen=True)
class Run:
    """One method on one task set: what `mooframe reproduce` runs (or reuses) and records."""

    experiment: str
    tasks: tuple[str, ...]
    method: str
    spec: dict[str, Any]  # the method's entry of the experiment file, smoke changes applied

    @property
    def folder(self) -> str:
        """The task set's folder name, e.g. "sun397+stanford-cars"."""
        return "+".join(self.tasks)

    @property
    def kind(self) -> str:
        return self.spec["kind"]


def experiment_names() -> list[str]:
    """The experiments shipped with mooframe (file names without .json)."""
    return sorted(path.stem for path in EXPERIMENTS_DIR.glob("*.json"))


@cache
def _load(name: str) -> str:
    path = EXPERIMENTS_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown experiment {name!r}; pass one of {', '.join(experiment_names())}")
    return path.read_text()


def load_experiment(name: str) -> dict[str, Any]:
    """The experiment file `name` as a dictionary (a fresh copy), its methods checked."""
    experiment = json.loads(_load(name))
    for method, spec in experiment["methods"].items():
        if spec.get("kind") not in KINDS:
            raise ValueError(
                f"experiment {name!r}: method {method!r} has kind {spec.get('kind')!r}, not one of {KINDS}"
            )
    return experiment


def plan(name: str, methods: list[str] | None = None, smoke: bool = False) -> list[Run]:
    """The runs of experiment `name`: every (task set, method), or only `methods`; smoke settings if asked."""
    experiment = load_experiment(name)
    known = list(experiment["methods"])
    unknown = sorted(set(methods or []) - set(known))
    if unknown:
        raise ValueError(f"experiment {name!r} has no methods {unknown}; its methods are {', '.join(known)}")
    chosen = [m for m in known if methods is None or m in methods]
    return [
        Run(
            name,
            tuple(tasks),
            method,
            _smoke(experiment["methods"][method]) if smoke else experiment["methods"][method],
        )
        for tasks in experiment["task_sets"]
        for method in chosen
        for spec in [experiment["methods"][method]]
    ]


def evaluation_grid(experiment: dict[str, Any], n_tasks: int, smoke: bool = False) -> np.ndarray:
    """The preferences a trained method's front is evaluated at, with the unit and equal preferences included."""
    from mooframe.preferences import uniform_grid

    equal = np.full((1, n_tasks), 1.0 / n_tasks)
    setting = experiment["evaluation"]
    if setting == "equal":
        return equal
    grid = uniform_grid(n_tasks, SMOKE["grid"] if smoke else setting["grid"])
    if np.abs(grid - equal).max(axis=1).min() > 1e-9:
        grid = np.vstack([grid, equal])
    return grid


def estimate(run: Run, n_tasks: int, grid_points: int) -> str:
    """A rough cost: examples through the network in training and the number of models evaluated."""
    spec = run.spec
    if run.kind == "train":
        steps, batch = spec["solve"]["steps"], spec["batch_size"]
        backward = "T backward passes a step" if spec["solver"] in ("epo", "mgda") else "one backward a step"
        return f"train {steps} steps x {n_tasks} tasks x {batch} examples ({backward}); evaluate {grid_points} model(s)"
    if run.kind == "sweep":
        return "evaluate 11 models (lambda = 0 ... 1)"
    if run.kind == "experts":
        return f"evaluate {n_tasks} experts"
    extra = spec.get("model_kwargs", {}).get("batches")
    reads = f" after {extra} training batches per task" if extra else ""
    return f"evaluate 1 model{reads}"


def _smoke(spec: dict[str, Any]) -> dict[str, Any]:
    spec = json.loads(json.dumps(spec))
    if "solve" in spec:
        spec["solve"]["steps"] = SMOKE["steps"]
    if "batch_size" in spec:
        spec["batch_size"] = SMOKE["batch_size"]
    if "batches" in spec.get("model_kwargs", {}):
        spec["model_kwargs"]["batches"] = SMOKE["batches"]
    spec["smoke"] = True
    return spec
