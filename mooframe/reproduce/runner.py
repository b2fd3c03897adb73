"""`mooframe reproduce EXPERIMENT`: run what has not run yet, evaluate, and write one report beside the paper's numbers.

Each run's evaluation is recorded as `<out>/<task set>/<method>.json` (trained sets also as a run folder beside it),
keyed by its settings: a record with the same settings is reused, one with other settings is recomputed.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mooframe.atomic import REPRODUCTION, RUN, check_output, claimed_directory
from mooframe.front import Front
from mooframe.models.sweeps import best_row
from mooframe.reproduce.experiments import SMOKE, Run, estimate, evaluation_grid, load_experiment, plan

FORMAT = "mooframe-reproduce/1"


def reproduce(
    name: str,
    out: str | Path | None = None,
    methods: Sequence[str] | None = None,
    smoke: bool = False,
    dry_run: bool = False,
    device: str = "cpu",
    problem_options: dict[str, Any] | None = None,
    experts: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path | None:
    """Run experiment `name` into `out` (default runs/reproduce/<name>[-smoke]) and return its report.md.

    `methods` selects some of the experiment's methods; `smoke` runs every step on a few examples; `dry_run` only
    logs the runs, whether each is done, and an estimate of its cost. `problem_options` override the experiment's
    problem options (e.g. {"family": "open_clip", "model": "ViT-B-32", "pretrained_weights": "openai"});
    `experts` is a path template with `{task}` for the expert of each task (e.g. open_clip state dicts).
    """
    experiment = load_experiment(name)
    runs = plan(name, list(methods) if methods else None, smoke)
    out = Path(out or Path("runs", "reproduce", f"{name}-smoke" if smoke else name))
    options = {**experiment["problem"]["kwargs"], **(problem_options or {})}
    if experts is not None and "{task}" not in experts:
        raise ValueError(f"the experts template {experts!r} has no {{task}}; pass e.g. '/ckpt/{{task}}/finetuned.pt'")
    claim = contextlib.nullcontext(out) if dry_run else claimed_directory(out, REPRODUCTION)
    with claim as out:  # new, empty or a reproduction folder, locked while it runs (a dry run writes nothing)
        records: dict[tuple[str, str], dict[str, Any]] = {}  # (task set folder, method) -> record
        problems: dict[tuple, Any] = {}
        log(f"{experiment['title']}: {len(runs)} runs into {out}")
        for run in runs:
            key = _record_key(run, experiment, options, experts, smoke)
            path = out / run.folder / f"{run.method}.json"
            record = _read_record(path)
            done = record is not None and record["key"] == key
            grid = evaluation_grid({**experiment, **run.spec}, len(run.tasks), smoke)  # a method may say "equal"
            if dry_run:
                cost = estimate(run, len(run.tasks), len(grid))
                log(f"  [{'done' if done else 'to run'}] {run.folder} / {run.method}: {cost}")
                continue
            if done:
                log(f"  reused {path}")
            else:
                log(f"  running {run.folder} / {run.method}")
                problem = _problem(problems, experiment, run, options, experts, smoke, device)
                record = {"format": FORMAT, "key": key, **_execute(run, problem, grid, out, device, progress)}
                _write_json(path, record)
            records[run.folder, run.method] = record
        if dry_run:
            return None
        report = out / "report.md"
        _write_text(report, _report(experiment, runs, records, out))
    log(f"report written to {report}")
    return report


def _record_key(run: Run, experiment: dict, options: dict, experts: str | None, smoke: bool) -> dict[str, Any]:
    return {
        "experiment": run.experiment,
        "tasks": list(run.tasks),
        "method": run.method,
        "spec": run.spec,
        "problem": {"name": experiment["problem"]["name"], "kwargs": options, "experts": experts},
        "evaluation": experiment["evaluation"],
        "smoke": smoke,
    }


def _problem(cache: dict, experiment: dict, run: Run, options: dict, experts: str | None, smoke: bool, device: str):
    """The task set's problem, built once per batch size (methods share it)."""
    from mooframe.registry import build_problem

    batch_size = SMOKE["batch_size"] if smoke else run.spec.get("batch_size", experiment["batch_size"])
    key = (run.tasks, batch_size)
    if key not in cache:
        kwargs = {**options, "tasks": list(run.tasks), "batch_size": batch_size}
        if experts is not None:
            kwargs["experts"] = [experts.format(task=task) for task in run.tasks]
        if smoke:
            kwargs |= {"max_train_examples": SMOKE["examples"], "max_test_examples": SMOKE["examples"]}
        cache[key] = build_problem(experiment["problem"]["name"], **kwargs).to(device)
    return cache[key]


def _execute(run: Run, problem: Any, grid: np.ndarray, out: Path, device: str, progress: bool) -> dict[str, Any]:
    """Run one method and evaluate it: {"prefs", "accuracy", "loss"} (+ "lambdas" for a sweep)."""
    from mooframe.demo import expert_front
    from mooframe.models.sweeps import lambda_sweep
    from mooframe.solve import solve

    spec = run.spec
    equal = np.full((1, len(run.tasks)), 1.0 / len(run.tasks))
    extra: dict[str, Any] = {}
    if run.kind == "experts":
        front = expert_front(problem)
    elif run.kind == "sweep":
        sweep = lambda_sweep(problem, spec["model"], **spec["model_kwargs"])
        front, extra = sweep.front, {"lambdas": sweep.lambdas}
    else:
        run_folder = check_output(out / run.folder / run.method, RUN)  # before training, not after
        model_kwargs = dict(spec["model_kwargs"])
        if model_kwargs.get("rays") == "equal":  # full fine-tuning at the equal preference: one model
            model_kwargs["rays"] = equal.tolist()
        settings = spec.get("solve", {"steps": 0})
        result = solve(
            problem,
            model=spec["model"],
            solver=spec.get("solver", "ls"),
            device=device,
            progress=progress,
            model_kwargs=model_kwargs,
            solver_kwargs=spec.get("solver_kwargs"),
            **settings,
        )
        if run.kind == "train":
            result.save(run_folder)
        front = result.front(grid if run.kind == "train" else equal, progress=progress)
    return {
        "kind": run.kind,
        "task_names": list(front.objective_names),
        "prefs": front.prefs.tolist(),
        "accuracy": front.metrics["accuracy"].tolist(),
        "loss": front.metrics["loss"].tolist(),
        **extra,
    }


def _read_record(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and record.get("format") == FORMAT else None


def _write_json(path: Path, record: dict[str, Any]) -> None:
    """Write `record` atomically; refuse to replace a file that is not a reproduce record."""
    if path.exists() and _read_record(path) is None:
        raise ValueError(f"{path} exists and was not written by mooframe reproduce; pass another --out")
    _write_text(path, json.dumps(record, indent=1))


def _write_text(path: Path, text: str) -> None:
    """Write `path` through a staging file renamed into place: it holds the old text or the new, never part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text(text)
    os.replace(staging, path)


def _value(record: dict[str, Any], pref: Any) -> np.ndarray | None:
    """This run's accuracies (%) for a paper row: at a preference, at the best lambda, or each expert's own task."""
    accuracy = 100 * np.asarray(record["accuracy"])
    if pref == "own":
        return np.diag(accuracy)
    if pref == "best":
        return accuracy[best_row(accuracy)]
    prefs = np.asarray(record["prefs"])
    target = np.full(prefs.shape[1], 1.0 / prefs.shape[1]) if pref == "equal" else np.asarray(pref, dtype=float)
    distance = np.abs(prefs - target).max(axis=1)
    return accuracy[int(distance.argmin())] if distance.min() < 1e-6 else None


def _cell(paper: float | None, run: float | None) -> str:
    if run is None:
        return f"{paper:.1f} / - " if paper is not None else "-"
    if paper is None:
        return f"- / {run:.1f}"
    return f"{paper:.1f} / {run:.1f} ({run - paper:+.1f})"


def _report(experiment: dict, runs: list[Run], records: dict[tuple[str, str], dict], out: Path) -> str:
    from mooframe.report import compare_fronts, write_report

    lines = [f"# {experiment['title']}", ""]
    lines += [
        "Accuracy in %, each cell `paper / this run (difference)`. Trained methods at the preference the paper "
        "names; Task Arithmetic and TIES at the lambda of highest mean test accuracy (the paper chose on a "
        "validation set); Fine-tuned (STL): each expert on its own task. Settings of each method and where they "
        "come from are in the experiment file (mooframe/reproduce/experiments/).",
        "",
    ]
    lines += [f"- {note}" for note in experiment.get("notes", [])]
    for tasks in experiment["task_sets"]:
        here = {method: record for (folder, method), record in records.items() if folder == "+".join(tasks)}
        lines += ["", f"## {', '.join(tasks)}", ""]
        header = ["method", *tasks, "Avg."]
        lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        shown = set()
        for entry in experiment["paper"]:
            if entry["method"] not in here or not set(tasks) <= set(entry["accuracy"]):
                continue
            shown.add(entry["method"])
            values = _value(here[entry["method"]], entry["pref"])
            paper = [entry["accuracy"][t] for t in tasks]
            run_values = [None] * len(tasks) if values is None else list(values)
            cells = [_cell(p, r) for p, r in zip(paper, run_values, strict=True)]
            mean_run = None if values is None else float(np.mean(values))
            lines.append(f"| {entry['row']} | " + " | ".join(cells) + f" | {_cell(float(np.mean(paper)), mean_run)} |")
        for method, record in here.items():  # methods the paper prints no number for
            if method in shown:
                continue
            values = _value(
                record, "own" if record["kind"] == "experts" else "best" if record["kind"] == "sweep" else "equal"
            )
            if values is not None:
                cells = [_cell(None, float(v)) for v in values]
                lines.append(f"| {method} | " + " | ".join(cells) + f" | {_cell(None, float(np.mean(values)))} |")
        if "experts" in here:
            lines += _experts_table(experiment["paper_experts"], here["experts"], tasks)
        if len(tasks) <= 3 and here:
            fronts = {method: _front(record) for method, record in here.items()}
            folder = "+".join(tasks)
            write_report(compare_fronts(fronts), fronts, out / folder / "fronts", title=", ".join(tasks))
            lines += ["", f"Fronts of all methods (test error 1 - accuracy): ![fronts]({folder}/fronts/fronts.png)"]
    return "\n".join(lines) + "\n"


def _experts_table(paper: dict, record: dict, tasks: Sequence[str]) -> list[str]:
    accuracy = 100 * np.asarray(record["accuracy"])
    lines = ["", f"Experts on every task of the set, `paper ({paper['source']}) / this run (difference)`:", ""]
    lines += ["| expert | " + " | ".join(tasks) + " |", "|" + " --- |" * (len(tasks) + 1)]
    for i, expert in enumerate(tasks):
        row = paper["rows"].get(expert, {})
        cells = [_cell(row.get(t), float(accuracy[i, j])) for j, t in enumerate(tasks)]
        lines.append(f"| {expert} | " + " | ".join(cells) + " |")
    return lines


def _front(record: dict) -> Front:
    accuracy = np.asarray(record["accuracy"])
    return Front(
        prefs=np.asarray(record["prefs"]),
        objectives=1.0 - accuracy,
        objective_names=list(record["task_names"]),
        metrics={"accuracy": accuracy, "loss": np.asarray(record["loss"])},
    )
