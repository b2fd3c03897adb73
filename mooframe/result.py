"""ParetoSetResult: a trained Pareto set model with its problem, queried by preference, saved as safetensors + JSON."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from mooframe.atomic import staged_directory
from mooframe.data import solutions_per_pass
from mooframe.pareto_set import ParetoSetModel
from mooframe.preferences import PreferenceLike, check_preference, uniform_grid
from mooframe.problem import Evaluation, Problem
from mooframe.solver import Solver

if TYPE_CHECKING:
    from mooframe.selection import Rule, Selection

FORMAT = "mooframe-run/1"
CONFIG_FILE, MODEL_FILE, HISTORY_FILE = "config.json", "model.safetensors", "history.safetensors"


@dataclass
class Front:
    """Objective values (minimized) and per-task metrics of a Pareto set at a list of preferences."""

    prefs: np.ndarray
    objectives: np.ndarray
    objective_names: list[str]
    metrics: dict[str, np.ndarray] = field(default_factory=dict)

    def to_csv(self, path: str | Path) -> None:
        """One row per preference: the preference, the objectives, then each metric per objective."""
        names = self.objective_names
        header = [f"pref_{n}" for n in names] + list(names)
        header += [f"{metric}_{n}" for metric in self.metrics for n in names]
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for i in range(len(self.prefs)):
                row = [*self.prefs[i], *self.objectives[i]]
                for values in self.metrics.values():
                    row.extend(values[i])
                writer.writerow([f"{v:.10g}" for v in row])


class ParetoSetResult:
    """The outcome of `solve`: query the learned Pareto set by preference, evaluate its front, save and load it."""

    def __init__(
        self,
        problem: Problem,
        model: ParetoSetModel,
        solver: Solver,
        settings: dict[str, Any] | None = None,
        history: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.problem = problem
        self.model = model
        self.solver = solver
        self.settings = settings or {}
        self.history = history or {}
        #: the run directory this result was loaded from (recorded in exported model cards).
        self.source: Path | None = None

    @property
    def n_objectives(self) -> int:
        return self.problem.n_objectives

    def model_at(self, pref: PreferenceLike) -> Any:
        """The standalone solution for `pref` (for merging models: a plain module, no routers left)."""
        self.model.eval()
        return self.model.materialize(pref)

    def front(
        self,
        prefs: Sequence[PreferenceLike] | np.ndarray | None = None,
        n: int = 11,
        progress: bool = False,
        device: str | torch.device | None = None,
        chunk: int | None = None,
    ) -> Front:
        """Evaluate the set at `prefs`, or at the uniform grid with `n` points per simplex edge.

        The preferences are evaluated `chunk` at a time by `problem.evaluate_many`: a merging problem reads and
        decodes each test example once per chunk and scores it under the chunk's K materialized models in turn.
        Default chunk: all the preferences, or as many models as fit in half the device's free memory. `device`
        first moves the problem and the model there (they stay there).
        """
        grid = uniform_grid(self.n_objectives, n) if prefs is None else np.asarray(prefs, dtype=float)
        for pref in grid:  # validate all before evaluating any; keep the float64 values for the front
            check_preference(pref, self.n_objectives)
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
            raise ValueError(
                f"chunk must be a number of preferences >= 1 per pass (or None: fit memory), got {chunk!r}"
            )
        if device is not None:
            self.problem.to(device)
            self.model.to(device)
        evaluations: list[Evaluation] = []
        bar = tqdm(total=len(grid), desc="front", unit="pref", disable=not progress, dynamic_ncols=True)
        with bar:
            while len(evaluations) < len(grid):
                start = len(evaluations)
                solutions = [self.model_at(grid[start])]
                if chunk is None:
                    chunk = solutions_per_pass(solutions[0], len(grid), self.model.device)
                solutions += [self.model_at(pref) for pref in grid[start + 1 : start + chunk]]
                evaluations += self.problem.evaluate_many(solutions, progress=progress)
                del solutions
                bar.update(len(evaluations) - start)
        metrics = {
            name: np.asarray([e.metrics[name] for e in evaluations], dtype=float) for name in evaluations[0].metrics
        }
        return Front(
            prefs=grid,
            objectives=np.asarray([e.objectives for e in evaluations], dtype=float),
            objective_names=list(self.problem.objective_names),
            metrics=metrics,
        )

    def save(self, directory: str | Path) -> Path:
        """Write the run to `directory` (config.json, model.safetensors, history.safetensors), atomically.

        The files are written to a temporary sibling folder first and moved into place at the end, so an
        interrupted save never leaves a half-written run behind.
        """
        directory = Path(directory)
        with staged_directory(directory) as staging:
            config = {
                "format": FORMAT,
                "problem": self.problem.spec(),
                "model": self.model.spec(),
                "solver": self.solver.spec(),
                "solver_state": self.solver.state_dict(),
                "objective_names": list(self.problem.objective_names),
                "settings": self.settings,
            }
            (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2))
            state = {k: v.detach().cpu().contiguous() for k, v in self.model.trainable_state().items()}
            save_file(state, str(staging / MODEL_FILE))
            history = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in self.history.items()}
            save_file(history, str(staging / HISTORY_FILE))
        return directory

    @classmethod
    def load(
        cls, directory: str | Path, problem: Problem | None = None, device: str | torch.device = "cpu"
    ) -> ParetoSetResult:
        """Read a run written by `save`. Pass `problem` when the run's problem was not built by name."""
        from mooframe.registry import build_model, build_problem, build_solver

        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"run directory {directory} does not exist")
        config = read_json(directory / CONFIG_FILE)
        if config.get("format") != FORMAT:
            raise ValueError(f"{directory / CONFIG_FILE} is not a mooframe run (format {config.get('format')!r})")
        if problem is None:
            if config["problem"] is None:
                raise ValueError(
                    f"the run in {directory} was made with a problem instance that is not registered by name; "
                    "pass it as ParetoSetResult.load(directory, problem=...)"
                )
            problem = build_problem(config["problem"]["name"], **config["problem"]["kwargs"])
        problem = problem.to(device)
        if config["model"] is None:
            raise ValueError(
                f"the run in {directory} used a model that is not registered by name; it cannot be rebuilt"
            )
        model = build_model(config["model"]["name"], problem, **config["model"]["kwargs"]).to(device)
        model.load_trainable_state(read_safetensors(directory / MODEL_FILE))
        solver = build_solver(config["solver"]["name"], **config["solver"]["kwargs"])
        solver.load_state_dict(config.get("solver_state", {}))  # absent in runs saved before it was stored
        history = {k: v.numpy() for k, v in read_safetensors(directory / HISTORY_FILE).items()}
        result = cls(problem, model, solver, settings=config.get("settings", {}), history=history)
        result.source = directory
        return result

    def select(self, rule: str | Rule, front: Front | None = None, n: int = 11, refine: int = 1) -> Selection:
        """Choose a preference by `rule` (see `mooframe.selection`) on `front`, or on the grid `front(n=n)`.

        `pref ...` rules evaluate that preference alone. With `refine=k > 1` the choice is refined: k - 1 more
        preferences are evaluated on each segment from it to its evaluated neighbours, and the rule is applied again.
        """
        from mooframe.selection import concat_fronts, local_refinement, parse_rule, select

        if refine < 1:
            raise ValueError(f"refine must be >= 1 (1: no refinement), got {refine}")
        rule = parse_rule(rule) if isinstance(rule, str) else rule
        if rule.kind == "pref":
            return select(self.front([rule.point]), rule)
        front = self.front(n=n) if front is None else front
        selection = select(front, rule)
        if refine > 1:
            selection = select(concat_fronts(front, self.front(local_refinement(front, selection.index, refine))), rule)
        return selection

    def export(
        self, path: str | Path, pref: PreferenceLike | Selection, force: bool = False, evaluate: bool = True
    ) -> Path:
        """Write the model at `pref` (or at a `Selection`'s choice) to `path` as its family's checkpoint + card.

        See `mooframe.export` for the formats. The card records the preference, the per-task objectives and metrics
        at it (taken from the selection, or measured now unless `evaluate=False`), the method, solver and source run.
        Refuses to replace an existing `path` unless `force`.
        """
        from mooframe.export import export_solution
        from mooframe.selection import Selection

        measured = (pref.objectives, pref.metrics) if isinstance(pref, Selection) else None
        pref = pref.pref if isinstance(pref, Selection) else pref
        check_preference(pref, self.n_objectives)
        solution = self.model_at(pref)
        if measured is None and evaluate:
            evaluation = self.problem.evaluate(solution)
            measured = (evaluation.objectives, evaluation.metrics)
        names = list(self.problem.objective_names)
        card = {
            "preference": _by_task(names, pref),
            "objectives": None if measured is None else _by_task(names, measured[0]),
            "metrics": {} if measured is None else {m: _by_task(names, v) for m, v in measured[1].items()},
            "method": self.model.spec() or {"name": type(self.model).__name__},
            "solver": self.solver.spec() or {"name": type(self.solver).__name__},
            "source_run": None if self.source is None else str(self.source.resolve()),
        }
        return export_solution(solution, path, card, force=force)


def _by_task(names: list[str], values: PreferenceLike) -> dict[str, float]:
    return dict(zip(names, np.asarray(values, dtype=float).flatten().tolist(), strict=True))


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"corrupt JSON in {path}: {error}") from error


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"corrupt safetensors file {path}: {error}") from error
