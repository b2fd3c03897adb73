"""solve(): learn a Pareto set model of a problem with a solver (Algorithm 1 of the PWE-MoE paper).

Each step draws K preferences r_1..r_K ~ Dirichlet(alpha) (K = `prefs_per_step`, 1 by default), builds the
solution for each r_k once, evaluates its T task losses (each task on its own batch, the same batches for the K
preferences), lets the solver weight them, and takes one optimizer step along the mean of the K updates:

    d = (1/K) sum_k sum_t w_kt grad l_t(r_k),   w_k = solver.weights(l(r_k), r_k[, G_k G_k^T])

K = 1 is Algorithm 1 as published. A larger K averages the update over preferences, as LibMOON's PSL does (K = 128
there): more preferences seen per step, at K forward passes a step (vectorized where the model can, see
`ParetoSetModel.preference_losses`).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mooframe import distributed
from mooframe.atomic import CHECKPOINTS, check_output
from mooframe.checkpoint import Interrupted, TrainingState, checkpoint_directory, guarded_training
from mooframe.data import resumed
from mooframe.gradients import add_flat_gradient, gram_matrix, per_task_gradients
from mooframe.pareto_set import ParetoSetModel
from mooframe.preferences import sample_preferences
from mooframe.problem import Problem
from mooframe.registry import build_model, build_problem, build_solver
from mooframe.result import ParetoSetResult
from mooframe.solver import Solver

logger = logging.getLogger(__name__)

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
LR_SCHEDULES = ("cosine", "constant")
ON_NONFINITE = ("raise", "skip")


def solve(
    problem: str | Problem,
    model: str | ParetoSetModel = "hypernet",
    solver: str | Solver = "ls",
    *,
    steps: int = 1000,
    lr: float | None = None,
    optimizer: str = "adam",
    lr_schedule: str = "cosine",
    warmup_steps: int | None = None,
    alpha: float = 1.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    problem_kwargs: dict[str, Any] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    solver_kwargs: dict[str, Any] | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: str | Path | None = None,
    on_nonfinite: str = "raise",
    prefs_per_step: int = 1,
    grad_clip: float | None = None,
) -> ParetoSetResult:
    """Train `model` on `problem` with `solver` and return the learned Pareto set.

    Args:
        problem, model, solver: registered names (see `mooframe list`) or instances.
        steps: optimizer steps, `prefs_per_step` preferences each.
        lr: learning rate; default: the model's `default_lr` (1e-2, the PWE-MoE paper's; 1e-3 for the
            hypernetwork). `lr_schedule="cosine"` decays it to 0.1 * lr (the PWE-MoE schedule).
        warmup_steps: steps over which the learning rate rises linearly to `lr` before the schedule starts;
            default: the model's `default_warmup_steps` (100 for PWE-MoE, else 0), at most a tenth of `steps`.
        optimizer: "adam", "adamw" or "sgd".
        alpha: concentration of the Dirichlet distribution preferences are drawn from (1 = uniform).
        seed: seeds model initialization, preference draws and batch order; runs on CPU are deterministic.
        device: where the model and the problem's tensors live.
        progress: show a progress bar with the running losses.
        problem_kwargs, model_kwargs, solver_kwargs: constructor options when the pieces are given by name.
        checkpoint_dir: where checkpoints go (see `mooframe.checkpoint`): on Ctrl-C, SIGTERM or SIGHUP, which
            finish the current step first, and every `checkpoint_every` steps and after the last. It must be new,
            empty or a checkpoint directory (checked before anything is built) and is locked while training.
            Defaults to the directory holding the checkpoint `resume` names.
        checkpoint_every: steps between checkpoints (0: only on Ctrl-C).
        resume: a checkpoint (or a directory of them: the newest) to continue from, exactly; the run's settings
            must equal those that wrote it.
        on_nonfinite: a NaN or inf loss or gradient "raise"s FloatingPointError naming the step and objective,
            or "skip"s the update (counted in `settings["skipped_steps"]`); parameters never become NaN (an update
            that overflows a parameter raises FloatingPointError even when skipping). A non-finite value under
            any of a step's K preferences stops or skips the whole step.
        prefs_per_step: K, the preferences drawn each step; the step's update is the mean of their K updates.
            The history keeps one row per preference trained (K per step, in the order drawn).
        grad_clip: clip the norm of the step's gradient (all trainable parameters together, after the mean over
            the K preferences and over ranks) to this value (`torch.nn.utils.clip_grad_norm_`); None: no clipping.

    Under torch.distributed (a process group is initialized, e.g. by `torchrun`) every rank draws the same
    preferences and trains on its shard of each task's batch, gradients are averaged over ranks (see
    `mooframe.distributed`), and only rank 0 writes checkpoints.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {lr_schedule!r}; known: {', '.join(LR_SCHEDULES)}")
    if on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"unknown on_nonfinite {on_nonfinite!r}; known: {', '.join(ON_NONFINITE)}")
    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0 (0: only on Ctrl-C), got {checkpoint_every}")
    if lr is not None and not 0 < lr < math.inf:
        raise ValueError(f"lr must be > 0, got {lr}; pass a finite positive learning rate")
    if not 0 < alpha < math.inf:
        raise ValueError(f"alpha must be > 0, got {alpha}; pass a finite positive Dirichlet concentration")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if isinstance(prefs_per_step, bool) or not isinstance(prefs_per_step, int) or prefs_per_step < 1:
        raise ValueError(f"prefs_per_step must be an integer >= 1, got {prefs_per_step!r}")
    if grad_clip is not None and not 0 < grad_clip < math.inf:
        raise ValueError(f"grad_clip must be > 0, got {grad_clip}; pass a finite positive norm, or None not to clip")
    if warmup_steps is not None and not 0 <= warmup_steps <= steps:
        raise ValueError(f"warmup_steps must be between 0 and steps = {steps}, got {warmup_steps}")
    if resume is not None and checkpoint_dir is None:
        checkpoint_dir = checkpoint_directory(resume)  # later checkpoints go beside the one resumed from
    if checkpoint_dir is not None:
        check_output(checkpoint_dir, CHECKPOINTS)  # before anything is built or trained
    device = distributed.rank_device(device)
    torch.manual_seed(seed)
    problem = build_problem(problem, **(problem_kwargs or {})).to(device)
    model = build_model(model, problem, **(model_kwargs or {})).to(device)
    solver = build_solver(solver, **(solver_kwargs or {}))
    n_objectives = problem.n_objectives
    solver.reset(n_objectives)

    params = model.trainable_parameters()
    if not params:
        logger.info("%s has no trainable parameters: nothing to train", type(model).__name__)
        steps = 0
    distributed.broadcast_parameters(params)
    lr = model.default_lr if lr is None else lr
    if warmup_steps is None:
        warmup_steps = min(model.default_warmup_steps, steps // 10)
    opt = OPTIMIZERS[optimizer](params, lr=lr) if params else None
    schedule = _lr_schedule(opt, lr_schedule, steps, warmup_steps) if opt else None

    settings = {"steps": steps, "lr": lr, "optimizer": optimizer, "lr_schedule": lr_schedule, "alpha": alpha}
    settings.update(warmup_steps=warmup_steps, seed=seed, device=str(device), world_size=distributed.world_size())
    settings.update(prefs_per_step=prefs_per_step, grad_clip=grad_clip)
    identity = {**settings, "problem": problem.spec(), "model": model.spec(), "solver": solver.spec()}
    state = TrainingState(model, opt, schedule, solver, np.random.default_rng(seed), settings=identity)
    if resume is not None:
        restored = state.restore(resume)
        logger.info("resumed from %s at step %d", restored, state.step)
    batches = resumed(problem.batches(np.random.default_rng([seed, 1])), state.step)  # skips without loading
    start = time.perf_counter()
    bar = tqdm(
        range(state.step, steps), desc="solve", disable=not (progress and distributed.is_writer()), dynamic_ncols=True
    )
    with guarded_training(checkpoint_dir, writer=distributed.is_writer()) as interrupted:
        for step in bar:
            prefs = _draw_preferences(model, state.pref_rng, alpha, prefs_per_step, step, device)
            batch = next(batches)  # this rank's share of the global batch, shared by the K preferences
            seen: dict[str, list[torch.Tensor]] = {"loss": [], "weight": []}
            try:
                opt.zero_grad(set_to_none=True)
                _accumulate_gradients(model, problem, solver, prefs, batch, params, seen)
                _check_gradients(model)
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                opt.step()
                if on_nonfinite == "skip":  # a finite gradient can still overflow a parameter: never keep it
                    _check_parameters(model, step)
            except _NonFinite as fault:
                if on_nonfinite == "raise":
                    hint = "pass on_nonfinite='skip' to skip such steps"
                    raise FloatingPointError(f"step {step}: {fault} ({hint})") from None
                logger.warning("step %d: %s; skipped", step, fault)
                state.skipped_steps += 1
                seen["weight"] = []  # no update was made: every weight of the step reads NaN
            schedule.step()
            state.record(*(_rows(seen[key], prefs_per_step, n_objectives) for key in ("loss", "weight")), prefs)
            bar.set_postfix_str(" ".join(f"{v:.3g}" for v in state.history["loss"][-1]), refresh=False)
            stop = distributed.any_rank(interrupted.is_set(), device)
            if stop or checkpoint_every and (state.step % checkpoint_every == 0 or state.step == steps):
                _write_checkpoint(state, checkpoint_dir)
            if stop:
                saved = f"; checkpoint in {checkpoint_dir}" if checkpoint_dir is not None else ""
                message = f"interrupted by {interrupted.signal_name} after step {state.step}{saved}"
                raise Interrupted(message, interrupted.signum)
    settings.update(train_seconds=time.perf_counter() - start, solver_stats=solver.stats())
    settings["skipped_steps"] = state.skipped_steps
    history = {key: np.asarray(rows, dtype=float).reshape(-1, n_objectives) for key, rows in state.history.items()}
    return ParetoSetResult(problem, model, solver, settings=settings, history=history)


class _NonFinite(FloatingPointError):
    """A NaN or inf loss or gradient: `solve` stops or skips the step, as `on_nonfinite` says."""


def _draw_preferences(
    model: ParetoSetModel, rng: np.random.Generator, alpha: float, count: int, step: int, device: torch.device
) -> torch.Tensor:
    """The K x T preferences of `step`: K Dirichlet draws in turn (the first is the draw of a K = 1 run), each
    passed through `model.training_preference` with its index among all preferences trained (step K + k).

    Every rank holds the same generator state, so under torch.distributed all ranks train the same K preferences.
    """
    draws = [sample_preferences(model.n_objectives, rng, alpha).to(device) for _ in range(count)]
    return torch.stack([model.training_preference(pref, step * count + k) for k, pref in enumerate(draws)])


def _accumulate_gradients(
    model: ParetoSetModel,
    problem: Problem,
    solver: Solver,
    prefs: torch.Tensor,
    batch: Any,
    params: list[torch.nn.Parameter],
    seen: dict[str, list[torch.Tensor]],
) -> None:
    """Set `.grad` of `params` to (1/K) sum_k sum_t w_kt grad l_t(r_k), with w_k the solver's weights at r_k.

    The solver sees each preference's losses averaged over ranks (and, if it needs it, the Gram matrix of the
    per-task gradients, averaged over ranks before it is formed); gradients are this rank's, averaged over ranks.
    Each block of losses the model evaluates together is backpropagated once, then released. The global losses
    and the weights of each preference are appended to `seen` as they come (a non-finite value raises `_NonFinite`).
    """
    count, index = len(prefs), 0
    for block in _loss_blocks(model, problem, prefs, batch, solver.needs_gram):
        objective: torch.Tensor | None = None  # sum_k w_k . l(r_k) over the block (solvers without a Gram matrix)
        for losses in block:
            if index == count:
                raise _wrong_count(model, "more", count)
            pref = prefs[index]
            global_losses = distributed.mean(losses.detach())
            _check_losses(global_losses, problem)
            seen["loss"].append(global_losses)
            _check_finite(global_losses, problem)
            if solver.needs_gram:
                weights, direction, reached = _gram_direction(losses, global_losses, pref, solver, params, problem)
                add_flat_gradient(reached, direction / count)
            else:
                weights = solver.weights(global_losses, pref).detach()
                term = weights @ losses
                objective = term if objective is None else objective + term
            seen["weight"].append(weights)
            index += 1
        if objective is not None:
            (objective / count).backward()
        block = losses = objective = None  # the Gram path retains the block's graph: drop it before the next
    if index != count:
        raise _wrong_count(model, "fewer", count)
    if not solver.needs_gram:
        distributed.mean_gradients(params)


def _wrong_count(model: ParetoSetModel, more_or_fewer: str, count: int) -> RuntimeError:
    return RuntimeError(f"{type(model).__name__}.preference_losses gave {more_or_fewer} than {count} rows of losses "
                        f"for {count} preferences; it must give one row per preference, in order")  # fmt: skip


def _loss_blocks(
    model: ParetoSetModel, problem: Problem, prefs: torch.Tensor, batch: Any, needs_gram: bool
) -> Iterator[torch.Tensor | list[torch.Tensor]]:
    """The model's blocks of losses for `prefs`; one preference at a time for a Gram-based solver, whose T per-task
    backward passes of each preference would each run through the whole block's graph (T K^2 work, not T K)."""
    if not needs_gram:
        yield from model.preference_losses(problem, prefs, batch)
        return
    for k in range(len(prefs)):
        yield from model.preference_losses(problem, prefs[k : k + 1], batch)


def _gram_direction(
    losses: torch.Tensor,
    global_losses: torch.Tensor,
    pref: torch.Tensor,
    solver: Solver,
    params: list[torch.nn.Parameter],
    problem: Problem,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.nn.Parameter]]:
    """The solver's weights w at `pref`, the direction w^T G and the parameters it covers.

    Parameters no loss depends on get no gradient (their `.grad` stays None, as in the summed backward, so that
    momentum leaves them be).
    """
    grads, reached = per_task_gradients(losses, params)
    grads = distributed.mean(grads)
    bad = ~torch.isfinite(grads).all(dim=1)
    if bad.any():  # before the solver sees a NaN Gram matrix
        raise _NonFinite(f"non-finite gradient of objective(s) {_names(bad, problem.objective_names)}")
    weights = solver.weights(global_losses, pref, gram=gram_matrix(grads)).detach().to(grads)
    return weights, weights @ grads, reached


def _rows(values: list[torch.Tensor], count: int, n_objectives: int) -> torch.Tensor:
    """`count` rows of the step's history: the values seen, NaN for the preferences a skipped step never reached."""
    rows = torch.full((count, n_objectives), float("nan"), dtype=torch.float64)
    if values:
        rows[: len(values)] = torch.stack([v.detach().double().cpu() for v in values])
    return rows


def _check_losses(losses: torch.Tensor, problem: Problem) -> None:
    if losses.shape != (problem.n_objectives,):
        raise ValueError(f"problem.losses returned shape {tuple(losses.shape)}, expected ({problem.n_objectives},)")


def _check_finite(losses: torch.Tensor, problem: Problem) -> None:
    bad = ~torch.isfinite(losses)
    if bad.any():
        raise _NonFinite(f"non-finite loss for objective(s) {_names(bad, problem.objective_names)}: {losses.tolist()}")


def _check_gradients(model: ParetoSetModel) -> None:
    named = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
    if not named:
        return
    finite = torch.stack([torch.isfinite(grad).all() for _, grad in named])  # one device sync, not one per tensor
    bad = [name for (name, _), ok in zip(named, finite.tolist(), strict=True) if not ok]
    if bad:
        raise _NonFinite(f"non-finite gradient in parameter(s) {bad[:5]}")


def _check_parameters(model: ParetoSetModel, step: int) -> None:
    bad = [name for name, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
    if bad:
        raise FloatingPointError(
            f"step {step}: the update made parameter(s) {bad[:5]} non-finite although its gradient was finite; "
            "lower the learning rate (--lr)"
        )


def _names(mask: torch.Tensor, names: list[str]) -> list[str]:
    return [names[t] for t in torch.nonzero(mask).flatten().tolist()]


def _write_checkpoint(state: TrainingState, directory: str | Path | None) -> None:
    if directory is not None and distributed.is_writer():
        logger.info("wrote checkpoint %s", state.save(directory))


def _lr_schedule(
    opt: torch.optim.Optimizer, kind: str, steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(lr_factor, kind, steps, warmup_steps))


def lr_factor(kind: str, steps: int, warmup_steps: int, step: int) -> float:
    """The learning rate of `step` over the base one: linear warm-up over `warmup_steps` steps (1/w, 2/w, ..., 1),
    then 1 ("constant") or a cosine from 1 at the end of the warm-up to 0.1 after the last step ("cosine")."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(steps - warmup_steps, 1)
    return 0.1 + 0.45 * (1.0 + math.cos(math.pi * progress))
