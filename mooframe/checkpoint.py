"""Checkpoints of a run in progress: everything `solve` needs to continue exactly where it stopped.

A checkpoint is a folder `step-00000042/` (at least 8 digits; more past step 99,999,999) holding `state.json`
(step, settings, solver state, optimizer and schedule hyperparameters, the preference generator's state, the
SHA-256 of the tensor file) and `tensors.safetensors` (trainable parameters, optimizer moments, torch RNG states,
the history so far), inside a checkpoint directory marked by `checkpoints.json` (see `mooframe.atomic`). It is
written to a hidden temporary folder and renamed into place, so a checkpoint folder is either complete or absent;
older ones are removed only after the new one exists. Loading reads JSON and safetensors only, checked before use:
nothing is unpickled, so a hostile file cannot run code.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from mooframe.atomic import (
    CHECKPOINT,
    CHECKPOINTS,
    artifact_kind,
    claimed_directory,
    clean_leftovers,
    file_sha256,
    locked,
    remove_artifact,
    staged_directory,
)
from mooframe.files import check_fields, check_file_hashes, read_json, read_safetensors
from mooframe.pareto_set import ParetoSetModel
from mooframe.solver import Solver

STATE_FILE, TENSORS_FILE = "state.json", "tensors.safetensors"
_STEP_FOLDER = re.compile(r"step-(\d{8,})")
#: the types of state.json's keys (None: JSON null).
_STATE_SCHEMA: dict[str, tuple[type | None, ...]] = {
    "step": (int,),
    "skipped_steps": (int,),
    "settings": (dict,),
    "solver": (dict,),
    "optimizer_groups": (list, None),
    "optimizer_scalars": (dict,),
    "schedule": (dict, None),
    "pref_rng": (dict,),
}
#: settings a resumed run must share with the run that wrote the checkpoint.
RESUME_KEYS = (
    *("steps", "lr", "optimizer", "lr_schedule", "warmup_steps", "alpha", "seed", "prefs_per_step", "grad_clip"),
    *("problem", "model", "solver"),
)
#: what a checkpoint written before a setting existed ran with.
_RESUME_DEFAULTS: dict[str, Any] = {"prefs_per_step": 1, "grad_clip": None}


@dataclass
class TrainingState:
    """What a run carries from step to step; `save` and `restore` make it survive a restart bit for bit."""

    model: ParetoSetModel
    optimizer: torch.optim.Optimizer | None
    schedule: torch.optim.lr_scheduler.LRScheduler | None
    solver: Solver
    pref_rng: np.random.Generator
    settings: dict[str, Any]
    history: dict[str, list] = field(default_factory=lambda: {"loss": [], "weight": [], "pref": []})
    step: int = 0
    skipped_steps: int = 0

    def record(self, losses: torch.Tensor, weights: torch.Tensor, prefs: torch.Tensor) -> None:
        """Close the current step: append its losses, solver weights and preferences (K x T each: one row per
        preference of the step) to the history."""
        for key, rows in (("loss", losses), ("weight", weights), ("pref", prefs)):
            self.history[key].extend(rows.detach().cpu().reshape(-1, self.model.n_objectives).tolist())
        self.step += 1

    def save(self, directory: str | Path) -> Path:
        """Write a checkpoint of the current step under `directory`, then remove the other checkpoints there.

        `directory` must be new, empty or a checkpoint directory (see `mooframe.atomic`); only folders that are
        mooframe checkpoints are ever removed from it.
        """
        params = self.model.trainable_state()
        for name, tensor in params.items():
            if not torch.isfinite(tensor).all():
                raise FloatingPointError(f"refusing to checkpoint non-finite trainable parameter {name!r}")
        with claimed_directory(directory, CHECKPOINTS) as directory:
            target = directory / _step_folder_name(self.step)
            with staged_directory(target, CHECKPOINT) as staging:
                tensors, json_state = self._snapshot(params)
                save_file(tensors, str(staging / TENSORS_FILE))
                json_state["files"] = {TENSORS_FILE: file_sha256(staging / TENSORS_FILE)}
                (staging / STATE_FILE).write_text(json.dumps(json_state, indent=1))
            for old in checkpoint_folders(directory):
                if old != target:
                    with locked(old):
                        remove_artifact(old)
        return target

    def restore(self, path: str | Path) -> Path:
        """Load the checkpoint at `path` (a checkpoint folder, or a directory of them: the newest is used)."""
        folder = latest_checkpoint(path)
        state_path = folder / STATE_FILE
        state = read_json(state_path)
        version = _check_state(state, state_path)
        hashes = check_file_hashes(state["files"], (TENSORS_FILE,), state_path) if version > 1 else {}
        tensors = read_safetensors(folder / TENSORS_FILE, hashes.get(TENSORS_FILE))
        _check_same_run(state, self.settings, folder)
        try:
            self._load(state, tensors)
        except (KeyError, TypeError, IndexError, RuntimeError) as error:  # RuntimeError: torch refusing a tensor
            raise ValueError(
                f"checkpoint {folder} is incomplete or malformed ({type(error).__name__}: {error})"
            ) from None
        except ValueError as error:
            raise ValueError(f"checkpoint {folder}: {error}") from None
        return folder

    def _snapshot(self, params: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"model/{name}": t.detach().cpu().contiguous() for name, t in params.items()}
        tensors["rng/torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors.update({f"rng/cuda/{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        for key, rows in self.history.items():
            tensors[f"history/{key}"] = torch.tensor(rows, dtype=torch.float64).reshape(
                len(rows), self.model.n_objectives
            )
        optimizer_scalars: dict[str, dict[str, Any]] = {}
        if self.optimizer is not None:
            opt_state = self.optimizer.state_dict()
            for index, values in opt_state["state"].items():
                for key, value in values.items():
                    if isinstance(value, torch.Tensor):
                        tensors[f"optimizer/{index}/{key}"] = value.detach().cpu().contiguous()
                    else:
                        optimizer_scalars.setdefault(str(index), {})[key] = value
        json_state = {
            "format": CHECKPOINT.format,
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "settings": {key: _as_json(self.settings.get(key)) for key in RESUME_KEYS},
            "solver": self.solver.state_dict(),
            "optimizer_groups": self.optimizer.state_dict()["param_groups"] if self.optimizer else None,
            "optimizer_scalars": optimizer_scalars,
            "schedule": self.schedule.state_dict() if self.schedule else None,
            "pref_rng": self.pref_rng.bit_generator.state,
        }
        return tensors, json_state

    def _load(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        model_state = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
        for name, tensor in model_state.items():
            if not tensor.is_floating_point():
                raise ValueError(f"trainable parameter {name!r} has dtype {tensor.dtype}; parameters are floating")
            if not torch.isfinite(tensor).all():
                raise ValueError(f"non-finite values in trainable parameter {name!r}")
        self.model.load_trainable_state(model_state)
        if self.optimizer is not None:
            self.optimizer.load_state_dict(self._optimizer_state(state, tensors))
            self.schedule.load_state_dict(state["schedule"])
        self.solver.load_state_dict(state["solver"])
        self.pref_rng.bit_generator.state = state["pref_rng"]
        torch.set_rng_state(tensors["rng/torch"])
        cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng/cuda/")]
        if cuda_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_states)
        self.step, self.skipped_steps = int(state["step"]), int(state["skipped_steps"])
        self.history = {key: tensors[f"history/{key}"].tolist() for key in self.history}
        per_step = self.settings.get("prefs_per_step", 1)
        if any(len(rows) != self.step * per_step for rows in self.history.values()):
            raise ValueError(f"the history does not have {per_step} row(s) per step for its {self.step} steps")

    def _optimizer_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        params = self.optimizer.param_groups[0]["params"]
        per_param: dict[int, dict[str, Any]] = {}
        for key, tensor in tensors.items():
            if key.startswith("optimizer/"):
                _, index, name = key.split("/")
                reference = params[int(index)]
                if tensor.ndim and tensor.shape != reference.shape:
                    raise ValueError(
                        f"optimizer state {key!r} has shape {tuple(tensor.shape)}, "
                        f"the parameter has {tuple(reference.shape)}"
                    )
                per_param.setdefault(int(index), {})[name] = tensor  # load_state_dict moves it to the parameter
        for index, values in state["optimizer_scalars"].items():
            per_param.setdefault(int(index), {}).update(values)
        groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in state["optimizer_groups"]]
        return {"state": per_param, "param_groups": groups}


def _step_folder_name(step: int) -> str:
    """`step-00000042`: zero-padded to 8 digits, so names sort by step up to 99,999,999 (longer names beyond)."""
    return f"step-{step:08d}"


def checkpoint_folders(directory: str | Path) -> list[Path]:
    """The complete checkpoint folders in `directory` (named step-N, holding a checkpoint), oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    clean_leftovers(directory)
    found = [
        (int(match[1]), p)
        for p in directory.iterdir()
        if (match := _STEP_FOLDER.fullmatch(p.name)) and p.is_dir() and _is_checkpoint(p)
    ]
    return [p for _, p in sorted(found)]


def _is_checkpoint(folder: Path) -> bool:
    found = artifact_kind(folder)
    return found is not None and found[0] == CHECKPOINT


def latest_checkpoint(path: str | Path) -> Path:
    """`path` if it is a checkpoint folder, else the newest checkpoint folder inside it."""
    path = Path(path)
    if (path / STATE_FILE).exists():
        return path
    if not path.exists():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist")
    if path.is_file():
        raise ValueError(f"{path} is a file; pass a checkpoint directory (holding step-NNNNNNNN/ folders)")
    folders = checkpoint_folders(path)
    if not folders:
        raise FileNotFoundError(f"no checkpoint (step-NNNNNNNN/{STATE_FILE}) in {path}")
    return folders[-1]


def checkpoint_directory(resume: str | Path) -> Path:
    """The directory a run resumed from `resume` (a checkpoint folder or a directory of them) checkpoints into:
    the folder's parent, so a later resume of that directory finds the new checkpoints beside the old."""
    return latest_checkpoint(resume).parent


def _check_state(state: dict[str, Any], path: Path) -> int:
    """Check state.json's shape and types (ValueError naming the key); return its format version."""
    check_fields(state, {"format": (str,)}, path)
    found = re.fullmatch(r"mooframe-checkpoint/(\d+)", state["format"])
    if found is None or not 1 <= int(found[1]) <= CHECKPOINT.version:
        raise ValueError(f"{path} is not a mooframe checkpoint (format {state['format']!r})")
    version = int(found[1])
    check_fields(state, {**_STATE_SCHEMA, **({"files": (dict,)} if version > 1 else {})}, path)
    if state["step"] < 0 or not 0 <= state["skipped_steps"] <= state["step"]:
        raise ValueError(f"{path}: keys 'step' and 'skipped_steps' must satisfy 0 <= skipped_steps <= step")
    return version


def _check_same_run(state: dict[str, Any], settings: dict[str, Any], folder: Path) -> None:
    saved = state.get("settings")
    if not isinstance(saved, dict):
        raise ValueError(f"{folder / STATE_FILE} has no run settings")
    for key in RESUME_KEYS:
        ours, theirs = _as_json(settings.get(key)), saved.get(key, _RESUME_DEFAULTS.get(key))
        if theirs != ours:
            raise ValueError(
                f"checkpoint {folder} was written by a run with {key}={theirs!r}, this run has "
                f"{key}={ours!r}; resume with the same settings"
            )


def _as_json(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists, unknown objects their str), for comparisons."""
    return json.loads(json.dumps(value, default=str))


class Interrupted(KeyboardInterrupt):
    """A run stopped between steps by a signal (Ctrl-C, SIGTERM, SIGHUP); `signum` says which."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum


class InterruptFlag(threading.Event):
    """Set by a deferred signal; `signum` is the first one that came."""

    signum: int = signal.SIGINT

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


#: what a cluster scheduler sends before it kills a job (SIGHUP: the terminal or session went away).
TERMINATION_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def _deferred_interrupt(signals: Sequence[int] = (signal.SIGINT,)) -> Iterator[InterruptFlag]:
    """Turn `signals` (Ctrl-C by default) into a flag checked between steps, so a step is never cut in half.

    Yields an event that is set on such a signal; the caller checkpoints and raises `Interrupted`. A second signal
    more than a second later interrupts at once (within a second it is the same one: torchrun forwards the
    terminal's Ctrl-C to workers that got it already). Outside the main thread nothing is deferred.
    """
    event = InterruptFlag()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    first_at: list[float] = []  # when the first signal came

    def handler(signum: int, frame: Any) -> None:
        if first_at and time.monotonic() - first_at[0] > 1.0:
            raise Interrupted(f"interrupted by {signal.Signals(signum).name}", signum)
        if not first_at:
            first_at.append(time.monotonic())
            event.signum = signum
        event.set()

    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield event
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def guarded_training(checkpoint_dir: str | Path | None, writer: bool = True) -> Iterator[InterruptFlag]:
    """The context of a training loop: hold the checkpoint directory's lock (on the process that writes it), and
    defer Ctrl-C, and SIGTERM and SIGHUP too when checkpointing, to the end of the current step."""
    hold = locked(checkpoint_dir) if checkpoint_dir is not None and writer else contextlib.nullcontext()
    signals = (signal.SIGINT, *TERMINATION_SIGNALS) if checkpoint_dir is not None else (signal.SIGINT,)
    with hold, _deferred_interrupt(signals) as flag:
        yield flag
