"""solve(): learn a Pareto set model of a problem with a solver (Algorithm 1 of the PWE-MoE paper).

Each step draws one preference r ~ Dirichlet(alpha), builds the solution for r once, evaluates the T task losses
(each on its own batch), lets the solver weight them, and takes one optimizer step on the trainable parameters.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mooframe.pareto_set import ParetoSetModel
from mooframe.preferences import sample_preferences
from mooframe.problem import Problem
from mooframe.registry import build_model, build_problem, build_solver
from mooframe.result import ParetoSetResult
from mooframe.solver import Solver

logger = logging.getLogger(__name__)

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
LR_SCHEDULES = ("cosine", "constant")


def solve(
    problem: str | Problem,
    model: str | ParetoSetModel = "hypernet",
    solver: str | Solver = "ls",
    *,
    steps: int = 1000,
    lr: float = 1e-2,
    optimizer: str = "adam",
    lr_schedule: str = "cosine",
    alpha: float = 1.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    problem_kwargs: dict[str, Any] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    solver_kwargs: dict[str, Any] | None = None,
) -> ParetoSetResult:
    """Train `model` on `problem` with `solver` and return the learned Pareto set.

    Args:
        problem, model, solver: registered names (see `mooframe list`) or instances.
        steps: optimizer steps, one preference each.
        lr: learning rate; `lr_schedule="cosine"` decays it to 0.1 * lr (the PWE-MoE schedule).
        optimizer: "adam", "adamw" or "sgd".
        alpha: concentration of the Dirichlet distribution preferences are drawn from (1 = uniform).
        seed: seeds model initialization, preference draws and batch order; runs on CPU are deterministic.
        device: where the model and the problem's tensors live.
        progress: show a progress bar with the running losses.
        problem_kwargs, model_kwargs, solver_kwargs: constructor options when the pieces are given by name.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {lr_schedule!r}; known: {', '.join(LR_SCHEDULES)}")
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
    opt = OPTIMIZERS[optimizer](params, lr=lr) if params else None
    schedule = _lr_schedule(opt, lr_schedule, steps) if opt else None

    pref_rng = np.random.default_rng(seed)
    batches = iter(problem.batches(np.random.default_rng([seed, 1])))
    history: dict[str, list] = {"loss": [], "weight": [], "pref": []}
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="solve", disable=not progress, dynamic_ncols=True)
    for step in bar:
        pref = model.training_preference(sample_preferences(n_objectives, pref_rng, alpha).to(device), step)
        solution = model(pref)
        losses = problem.losses(solution, next(batches))
        _check_finite(losses, step, problem)
        opt.zero_grad(set_to_none=True)
        weights = _backward(losses, pref, solver, params)
        opt.step()
        schedule.step()
        history["loss"].append(losses.detach().cpu().tolist())
        history["weight"].append(weights.detach().cpu().tolist())
        history["pref"].append(pref.cpu().tolist())
        bar.set_postfix_str(" ".join(f"{v:.3g}" for v in history["loss"][-1]), refresh=False)
    settings = {
        "steps": steps,
        "lr": lr,
        "optimizer": optimizer,
        "lr_schedule": lr_schedule,
        "alpha": alpha,
        "seed": seed,
        "device": str(device),
        "train_seconds": time.perf_counter() - start,
        "solver_stats": solver.stats(),
    }
    history_arrays = {key: np.asarray(values, dtype=float).reshape(-1, n_objectives) for key, values in history.items()}
    return ParetoSetResult(problem, model, solver, settings=settings, history=history_arrays)


def _backward(
    losses: torch.Tensor, pref: torch.Tensor, solver: Solver, params: list[torch.nn.Parameter]
) -> torch.Tensor:
    """Set `.grad` of `params` to sum_t w_t grad l_t with the solver's weights w, and return w."""
    if not solver.needs_gram:
        weights = solver.weights(losses.detach(), pref).detach()
        (weights @ losses).backward()
        return weights
    # Parameters no loss depends on keep .grad None, as in the summed backward, so that momentum leaves them be.
    params = parameters_reached(losses, params)
    grads = per_task_gradients(losses, params)
    weights = solver.weights(losses.detach(), pref, gram=grads @ grads.T).detach().to(grads)
    assign_flat_gradient(params, weights @ grads)
    return weights


def per_task_gradients(losses: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    """The T x P matrix whose row t is the gradient of loss t with respect to `params`, flattened."""
    rows = []
    for t in range(losses.numel()):
        grads = torch.autograd.grad(losses[t], params, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat(
                [(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params, strict=True)]
            )
        )
    return torch.stack(rows)


def parameters_reached(output: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    """The entries of `params` that `output` depends on, found by walking its autograd graph (no computation)."""
    leaves, seen, stack = set(), set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):
            leaves.add(id(node.variable))
        stack.extend(child for child, _ in node.next_functions)
    return [p for p in params if id(p) in leaves]


def assign_flat_gradient(params: list[torch.nn.Parameter], flat: torch.Tensor) -> None:
    """Write a flat gradient vector into the `.grad` of each parameter, in order."""
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def _check_finite(losses: torch.Tensor, step: int, problem: Problem) -> None:
    if losses.shape != (problem.n_objectives,):
        raise ValueError(f"problem.losses returned shape {tuple(losses.shape)}, expected ({problem.n_objectives},)")
    bad = ~torch.isfinite(losses.detach())
    if bad.any():
        names = [problem.objective_names[t] for t in torch.nonzero(bad).flatten().tolist()]
        raise FloatingPointError(f"non-finite loss at step {step} for objective(s) {names}: {losses.tolist()}")


def _lr_schedule(opt: torch.optim.Optimizer, kind: str, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if kind == "constant" or steps == 0:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    base_lr = opt.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=0.1 * base_lr)
