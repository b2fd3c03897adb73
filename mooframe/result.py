"""ParetoSetResult: a trained Pareto set model with its problem, queried by preference, saved as safetensors + JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from mooframe.atomic import EXPORT, RUN, check_output, file_sha256, recover_for_reading, staged_directory
from mooframe.data import solutions_per_pass
from mooframe.export import export_solution
from mooframe.files import check_fields, check_file_hashes, read_json, read_safetensors
from mooframe.front import Front
from mooframe.pareto_set import ParetoSetModel
from mooframe.preferences import PreferenceLike, check_preference, uniform_grid
from mooframe.problem import Evaluation, Problem
from mooframe.registry import build_model, build_problem, build_solver, check_options, run_options
from mooframe.report import evaluation_preferences
from mooframe.selection import Rule, Selection, concat_fronts, local_refinement, parse_rule, select
from mooframe.solver import Solver

CONFIG_FILE, MODEL_FILE, HISTORY_FILE = "config.json", "model.safetensors", "history.safetensors"


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
        Default chunk: all the preferences, or as many models as fit in half the device's free memory. Preferences
        that share a `solution_key` (one model per ray, a fixed merge) are evaluated once. `device` first moves the
        problem and the model there (they stay there).
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
        distinct, solution_of = self._distinct_solutions(grid)
        evaluations: list[Evaluation] = []
        bar = tqdm(total=len(distinct), desc="front", unit="pref", disable=not progress, dynamic_ncols=True)
        with bar:
            while len(evaluations) < len(distinct):
                start = len(evaluations)
                solutions = [self.model_at(distinct[start])]
                if chunk is None:
                    chunk = solutions_per_pass(solutions[0], len(distinct), self.model.device)
                solutions += [self.model_at(pref) for pref in distinct[start + 1 : start + chunk]]
                evaluations += self.problem.evaluate_many(solutions, progress=progress)
                del solutions
                bar.update(len(evaluations) - start)
        evaluations = [evaluations[i] for i in solution_of]
        metrics = {
            name: np.asarray([e.metrics[name] for e in evaluations], dtype=float) for name in evaluations[0].metrics
        }
        return Front(
            prefs=grid,
            objectives=np.asarray([e.objectives for e in evaluations], dtype=float),
            objective_names=list(self.problem.objective_names),
            metrics=metrics,
        )

    def _distinct_solutions(self, grid: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """The preferences of `grid` with distinct solutions, and for each preference the index of its own."""
        first: dict[Hashable, int] = {}
        distinct: list[int] = []
        solution_of: list[int] = []
        for i, pref in enumerate(grid):
            key = self.model.solution_key(check_preference(pref, self.n_objectives).to(self.model.device))
            if key is None or key not in first:
                if key is not None:
                    first[key] = len(distinct)
                distinct.append(i)
                solution_of.append(len(distinct) - 1)
            else:
                solution_of.append(first[key])
        return grid[distinct], solution_of

    def save(self, directory: str | Path, inputs: Sequence[str | Path] = ()) -> Path:
        """Write the run to `directory` (config.json, model.safetensors, history.safetensors), atomically.

        `directory` must be new, empty or a run mooframe wrote (see `mooframe.atomic`), and not inside any of
        `inputs`. The files are written to a hidden sibling folder that replaces `directory` only once complete;
        config.json records each tensor file's SHA-256, which `load` checks. Non-finite parameters are refused.
        """
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.trainable_state().items()}
        bad = [name for name, tensor in state.items() if not torch.isfinite(tensor).all()]
        if bad:
            raise FloatingPointError(f"refusing to save a run with non-finite trainable parameter(s) {bad[:5]}")
        history = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in self.history.items()}
        directory = Path(directory)
        with staged_directory(directory, RUN, inputs) as staging:
            save_file(state, str(staging / MODEL_FILE))
            save_file(history, str(staging / HISTORY_FILE))
            config = {
                "format": RUN.format,
                "problem": self.problem.spec(),
                "model": self.model.spec(),
                "solver": self.solver.spec(),
                "solver_state": self.solver.state_dict(),
                "objective_names": list(self.problem.objective_names),
                "settings": self.settings,
                "files": {name: file_sha256(staging / name) for name in (MODEL_FILE, HISTORY_FILE)},
            }
            (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        return directory

    @classmethod
    def load(
        cls,
        directory: str | Path,
        problem: Problem | None = None,
        device: str | torch.device = "cpu",
        problem_options: dict[str, Any] | None = None,
        trust_paths: bool = False,
    ) -> ParetoSetResult:
        """Read a run written by `save`, validating every file before anything is built from it.

        Pass `problem` when the run's problem was not built by name. A run's problem options that name paths or
        sources (cache folders, model paths, data folders: the class's `path_options`) are not taken from the
        run file: re-supply them in `problem_options`, or pass `trust_paths=True` to use the run's values.
        """
        directory = Path(directory)
        recover_for_reading(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"run directory {directory} does not exist")
        config_path = directory / CONFIG_FILE
        config = read_json(config_path)
        version = _check_config(config, config_path)
        hashes = check_file_hashes(config["files"], (MODEL_FILE, HISTORY_FILE), config_path) if version > 1 else {}
        state = read_safetensors(directory / MODEL_FILE, hashes.get(MODEL_FILE))
        history_tensors = read_safetensors(directory / HISTORY_FILE, hashes.get(HISTORY_FILE))
        names = config["objective_names"]
        _check_model_tensors(state, directory / MODEL_FILE)
        history = _check_history(history_tensors, len(names), directory / HISTORY_FILE)
        for piece in ("model", "solver"):
            if config[piece] is None:
                raise ValueError(
                    f"the run in {directory} used a {piece} that is not registered by name; it cannot be rebuilt"
                )
        where = f"{config_path} key"
        model_options = run_options(
            "model", config["model"]["name"], config["model"]["kwargs"], {}, trust_paths, f"{where} 'model.kwargs'"
        )
        solver_options = config["solver"]["kwargs"]
        check_options("solver", config["solver"]["name"], solver_options, f"{where} 'solver.kwargs'")
        if problem is None:
            if config["problem"] is None:
                raise ValueError(
                    f"the run in {directory} was made with a problem instance that is not registered by name; "
                    "pass it as ParetoSetResult.load(directory, problem=...)"
                )
            spec = config["problem"]
            options = run_options(
                "problem", spec["name"], spec["kwargs"], problem_options or {}, trust_paths, f"{where} 'problem.kwargs'"
            )
            problem = build_problem(spec["name"], **options)
        elif problem_options:
            raise ValueError("problem_options re-supply options of the run's own problem; they cannot go with problem=")
        if list(problem.objective_names) != names:
            raise ValueError(
                f"{config_path}: the run's objectives {names} are not the problem's {list(problem.objective_names)}"
            )
        problem = problem.to(device)
        model = build_model(config["model"]["name"], problem, **model_options).to(device)
        try:
            model.load_trainable_state(state)
        except ValueError as error:
            raise ValueError(f"{directory / MODEL_FILE}: {error}") from None
        solver = build_solver(config["solver"]["name"], **solver_options)
        try:
            solver.load_state_dict(config.get("solver_state", {}))  # absent in runs saved before it was stored
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise ValueError(f"{config_path}: key 'solver_state' does not fit the solver ({error!r})") from None
        result = cls(problem, model, solver, settings=config["settings"], history=history)
        result.source = directory
        return result

    def select(
        self,
        rule: str | Rule,
        front: Front | None = None,
        n: int | None = None,
        refine: int = 1,
        max_preferences: int | None = None,
    ) -> Selection:
        """Choose a preference by `rule` (see `mooframe.selection`) on `front`, or on the evaluation grid with `n`
        points per simplex edge (default: `mooframe.report.evaluation_preferences`'s, which scales with T).

        `pref ...` rules evaluate that preference alone. With `refine=k > 1` the choice is refined: k - 1 more
        preferences are evaluated on each segment from it to its evaluated neighbours, and the rule is applied again.
        More preferences than `max_preferences` (default `mooframe.report.PREFERENCE_BUDGET`) are refused.
        """
        if refine < 1:
            raise ValueError(f"refine must be >= 1 (1: no refinement), got {refine}")
        rule = parse_rule(rule) if isinstance(rule, str) else rule
        if rule.kind == "pref":
            return select(self.front([rule.point]), rule)
        if front is None:
            front = self.front(evaluation_preferences(self.n_objectives, n, max_preferences, refine=refine))
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
        inputs = [self.source] if self.source else []
        check_output(path, EXPORT, inputs, replace=force)  # before the model is built and evaluated
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
        return export_solution(solution, path, card, force=force, inputs=inputs)


def _check_config(config: dict[str, Any], path: Path) -> int:
    """Check config.json's shape and types (ValueError naming the key); return its format version."""
    check_fields(config, {"format": (str,)}, path)
    found = re.fullmatch(r"mooframe-run/(\d+)", config["format"])
    if found is None or not 1 <= int(found[1]) <= RUN.version:
        raise ValueError(
            f"{path} is not a mooframe run this version reads (format {config['format']!r}, expected {RUN.format})"
        )
    version = int(found[1])
    schema: dict[str, tuple[type | None, ...]] = {
        "problem": (dict, None),
        "model": (dict, None),
        "solver": (dict, None),
        "objective_names": (list,),
        "settings": (dict,),
    }
    if version > 1:
        schema.update(solver_state=(dict,), files=(dict,))
    check_fields(config, schema, path)
    for piece in ("problem", "model", "solver"):
        if config[piece] is not None:
            check_fields(config[piece], {"name": (str,), "kwargs": (dict,)}, path, prefix=f"{piece}.")
    names = config["objective_names"]
    if not names or not all(isinstance(name, str) for name in names) or len(set(names)) != len(names):
        raise ValueError(f"{path}: key 'objective_names' must be a list of distinct names, got {names!r}")
    return version


def _check_model_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            raise ValueError(f"{path}: tensor {name!r} has dtype {tensor.dtype}; trainable parameters are floating")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{path}: tensor {name!r} holds non-finite values")


HISTORY_KEYS = ("loss", "weight", "pref")


def _check_history(tensors: dict[str, torch.Tensor], n_objectives: int, path: Path) -> dict[str, np.ndarray]:
    """The history as arrays: float64, one row per preference trained (K rows a step with `prefs_per_step` = K) and
    one column per objective (NaN rows: skipped steps)."""
    unknown = sorted(set(tensors) - set(HISTORY_KEYS))
    if unknown:
        raise ValueError(f"{path}: unexpected tensors {unknown}; a run's history holds {', '.join(HISTORY_KEYS)}")
    rows = {len(t) for t in tensors.values()}
    for name, tensor in tensors.items():
        if tensor.dtype != torch.float64 or tensor.ndim != 2 or tensor.shape[1] != n_objectives or len(rows) > 1:
            raise ValueError(
                f"{path}: tensor {name!r} has dtype {tensor.dtype} and shape {tuple(tensor.shape)}; expected "
                f"float64 of shape (rows, {n_objectives}) with one row per preference trained, the same rows for "
                f"{', '.join(sorted(tensors))}"
            )
    return {name: tensor.numpy() for name, tensor in tensors.items()}


def _by_task(names: list[str], values: PreferenceLike) -> dict[str, float]:
    return dict(zip(names, np.asarray(values, dtype=float).flatten().tolist(), strict=True))
