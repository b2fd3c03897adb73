"""MergingProblem: T tasks sharing a pretrained backbone, one fine-tuned expert per task, frozen heads."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mooframe.data import TrainingBatches, ordered_batches, to_device
from mooframe.merging.store import ExpertState, LowRankExpert, file_shapes
from mooframe.problem import Evaluation, Problem

TASK_OBJECTIVES = ("cross_entropy", "entropy", "weight_distance")


class MergingProblem(Problem):
    """T tasks sharing one pretrained backbone, with one expert per task fine-tuned from it and frozen heads.

    A solution is a backbone (an `nn.Module`, or a `FunctionalModel` holding merged parameters): called on a
    task's inputs (a tensor, or a dict of tensors passed as keyword arguments) it returns features, and
    `heads[t]` turns them into task t's logits. Experts are state dicts (or modules) of the backbone, safetensors
    files of such state dicts (read lazily: memory-mapped, each tensor when it is read), or `LowRankExpert`s
    (exact low-rank deltas, e.g. LoRA adapters: `mooframe.adapters.peft`); their parameter names and shapes must
    equal the pretrained model's. `expert_states` holds them as read-only name -> tensor mappings.

    Args:
        pretrained: the pretrained backbone theta_0 (frozen, kept in eval mode).
        experts: T fine-tuned backbones, their state dicts theta_t, paths of .safetensors files holding those, or
            `LowRankExpert`s.
        heads: T frozen classification heads, features -> logits.
        train_data: T datasets of (inputs, label) pairs used for the training losses.
        test_data: T datasets of (inputs, label) pairs for `evaluate` (defaults to `train_data`).
        task_names: T short names (default task1, ..., taskT).
        objective: "cross_entropy" on labels, "entropy" of the predictions (unlabeled, test-time merging), or
            "weight_distance" ||theta - theta_t||^2 to expert t (data-free; Chen & Kwok, Pareto Merging).
        batch_size: examples per task per training step.
        eval_batch_size: examples per forward pass in `evaluate`.
        upscale_presets: named lists of regular expressions that select the up-scalable modules by name
            (e.g. {"mlp": [...], "attention_mlp": [...]}); supplied by the model family's adapter.

    Loading (attributes, not constructor arguments: they change how fast, never what is computed):
    `workers` DataLoader processes for data not held in memory (None: `mooframe.data.default_workers`);
    `eval_autocast` "bfloat16" or "float16" runs `evaluate` under `torch.autocast` on CUDA (None: as trained).
    """

    workers: int | None = None
    eval_autocast: str | None = None

    def __init__(
        self,
        pretrained: nn.Module,
        experts: Sequence[nn.Module | Mapping[str, torch.Tensor] | str | Path | LowRankExpert],
        heads: Sequence[nn.Module],
        train_data: Sequence[Dataset],
        test_data: Sequence[Dataset] | None = None,
        task_names: Sequence[str] | None = None,
        objective: str = "cross_entropy",
        batch_size: int = 16,
        eval_batch_size: int = 256,
        upscale_presets: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        n_tasks = len(experts)
        if n_tasks < 1:
            raise ValueError("a merging problem needs at least one expert")
        for what, values in (
            ("heads", heads),
            ("train_data", train_data),
            ("test_data", test_data),
            ("task_names", task_names),
        ):
            if values is not None and len(values) != n_tasks:
                raise ValueError(f"got {n_tasks} experts but {len(values)} {what}; pass one per task")
        if objective not in TASK_OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; known: {', '.join(TASK_OBJECTIVES)}")
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError(f"batch sizes must be >= 1, got {batch_size} and {eval_batch_size}")
        self.task_names = list(task_names) if task_names is not None else [f"task{t + 1}" for t in range(n_tasks)]
        self.pretrained = _frozen(pretrained)
        self.expert_states = [
            _checked_expert_state(self.pretrained, expert, self.task_names[t]) for t, expert in enumerate(experts)
        ]
        if objective == "weight_distance":  # read every step: held, not re-read from a file
            for state in self.expert_states:
                state.hold(state.shapes)
        self.heads = nn.ModuleList(_frozen(head) for head in heads)
        self.train_data, self.test_data = list(train_data), list(test_data or train_data)
        self.objective, self.batch_size, self.eval_batch_size = objective, batch_size, eval_batch_size
        self.upscale_presets = {k: list(v) for k, v in (upscale_presets or {}).items()}
        self.device = torch.device("cpu")
        self.released_by: str | None = None

    @property
    def n_objectives(self) -> int:
        return len(self.expert_states)

    @property
    def objective_names(self) -> list[str]:
        return list(self.task_names)

    def pretrained_state(self) -> dict[str, torch.Tensor]:
        """theta_0: the pretrained backbone's parameters by name (detached)."""
        if self.released_by is not None:
            raise ValueError(
                f"{self.released_by} merged this problem's experts once and released them (release_experts=True): "
                "the backbone outside its up-scaled modules now holds that merge; build the problem again"
            )
        return {name: p.detach() for name, p in self.pretrained.named_parameters()}

    def release_experts(self, keep: Sequence[str], merged_rest: Mapping[str, torch.Tensor], by: str) -> None:
        """Hold only what `by` reads from now on: the experts' parameters in `keep`.

        The experts' other parameters are dropped, and the backbone's parameters named in `merged_rest` are
        overwritten in place with their once-merged values, so that neither theta_0 nor any theta_t of those stays
        in memory. The problem then serves that one model only: `pretrained_state()` and reads of released names
        raise.
        """
        if self.objective == "weight_distance":
            raise ValueError("the weight_distance objective reads every expert parameter; pass release_experts=False")
        keep = set(keep)
        if keep & set(merged_rest):
            raise ValueError(f"parameters both kept and merged once: {sorted(keep & set(merged_rest))[:3]}")
        with torch.no_grad():
            for name, value in merged_rest.items():
                self.pretrained.get_parameter(name).copy_(value)
        for state in self.expert_states:
            state.release(keep, by)
        self.released_by = by

    def to(self, device: torch.device | str) -> MergingProblem:
        self.device = torch.device(device)
        self.pretrained.to(self.device)
        self.heads.to(self.device)
        for state in self.expert_states:
            state.to(self.device)
        return self

    def batches(self, rng: np.random.Generator) -> TrainingBatches:
        """Each step: one shuffled batch of `batch_size` examples per task, reshuffled every epoch; under
        torch.distributed this rank's contiguous share of it, the only examples the rank loads. Data not in memory
        is loaded by `workers` DataLoader processes ahead of the step (pinned on CUDA); the stream's `skip(n)`
        resumes at step n without loading the steps before it (see `mooframe.data`)."""
        return TrainingBatches(self.train_data, self.batch_size, rng, self.workers, self.device.type == "cuda")

    def logits(self, solution: Callable[..., torch.Tensor], task: int, inputs: Any) -> torch.Tensor:
        """Task `task`'s logits for `inputs` under the backbone `solution`."""
        inputs = to_device(inputs, self.device)
        features = solution(**inputs) if isinstance(inputs, Mapping) else solution(inputs)
        return self.heads[task](features)

    def _losses(self, solution: Callable[..., torch.Tensor], batch: list[tuple[Any, torch.Tensor]]) -> torch.Tensor:
        if self.objective == "weight_distance":
            return expert_distances(solution_parameters(solution), self.expert_states)
        values = []
        for task, (inputs, labels) in enumerate(batch):
            logits = self.logits(solution, task, inputs)
            if self.objective == "cross_entropy":
                values.append(F.cross_entropy(logits, labels.to(self.device)))
            else:
                values.append(prediction_entropy(logits))
        return torch.stack(values)

    def _evaluate(self, solution: Callable[..., torch.Tensor]) -> Evaluation:
        """Per-task accuracy and cross-entropy on the test data; the objectives are the errors 1 - accuracy."""
        return self._evaluate_many([solution], progress=False)[0]

    def _evaluate_many(self, solutions: Sequence[Callable[..., torch.Tensor]], progress: bool) -> list[Evaluation]:
        """`evaluate` of each solution, reading and decoding each test example once: every test batch is scored by
        all the solutions in turn. The counts are summed on the device and read once at the end."""
        n, n_tasks = len(solutions), self.n_objectives
        bar = tqdm(
            total=sum(len(data) for data in self.test_data),
            desc=f"evaluate x{n}",
            unit="img",
            unit_scale=True,
            disable=not progress,
            dynamic_ncols=True,
        )
        correct = torch.zeros((n, n_tasks), dtype=torch.long, device=self.device)
        loss_sum = torch.zeros((n, n_tasks), dtype=torch.float64, device=self.device)
        batches = ordered_batches(self.test_data, self.eval_batch_size, self.workers, self.device.type == "cuda")
        with torch.no_grad(), self._evaluation_autocast(), bar:
            for task, (inputs, labels) in batches:
                inputs, labels = to_device(inputs, self.device), to_device(labels, self.device)
                for k, solution in enumerate(solutions):
                    logits = self.logits(solution, task, inputs).float()
                    correct[k, task] += (logits.argmax(-1) == labels).sum()
                    loss_sum[k, task] += F.cross_entropy(logits, labels, reduction="sum").double()
                bar.update(len(labels))
        sizes = np.array([len(data) for data in self.test_data])
        accuracy, loss = correct.cpu().numpy() / sizes, loss_sum.cpu().numpy() / sizes
        return [
            Evaluation(objectives=1.0 - accuracy[k], metrics={"accuracy": accuracy[k], "loss": loss[k]})
            for k in range(n)
        ]

    def _evaluation_autocast(self) -> contextlib.AbstractContextManager:
        if self.eval_autocast is None:
            return contextlib.nullcontext()
        dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16}
        if self.eval_autocast not in dtypes:
            raise ValueError(f"eval_autocast must be None, 'bfloat16' or 'float16', got {self.eval_autocast!r}")
        if self.device.type != "cuda":
            return contextlib.nullcontext()  # autocast to half precision is a GPU speed-up; CPU evaluates as trained
        return torch.autocast("cuda", dtype=dtypes[self.eval_autocast])


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy of softmax(logits) over the batch (the AdaMerging test-time objective)."""
    log_probs = F.log_softmax(logits, dim=-1)
    return -(log_probs.exp() * log_probs).sum(-1).mean()


def solution_parameters(solution: Any) -> dict[str, torch.Tensor]:
    """The parameters theta of a solution by name: a module's, or a `FunctionalModel`'s `params` over its module's
    own (names `params` lacks fall back to the module's, as `functional_call` does)."""
    if isinstance(solution, nn.Module):
        return dict(solution.named_parameters())
    if isinstance(getattr(solution, "module", None), nn.Module) and isinstance(getattr(solution, "params", None), dict):
        return {**dict(solution.module.named_parameters()), **solution.params}
    raise ValueError(
        f"the weight_distance objective needs a solution with parameters (an nn.Module or a FunctionalModel), "
        f"got {type(solution).__name__}"
    )


def expert_distances(
    params: Mapping[str, torch.Tensor], expert_states: Sequence[Mapping[str, torch.Tensor]]
) -> torch.Tensor:
    """Squared Euclidean distances ||theta - theta_t||^2 to each expert, over the experts' parameter names, shape (T,).

    The data-free objectives of Pareto Merging (Chen & Kwok, ICML 2025): no data, only the experts' weights.
    """
    return torch.stack(
        [sum(((params[name] - value) ** 2).sum() for name, value in state.items()) for state in expert_states]
    )


def _frozen(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _checked_expert_state(
    pretrained: nn.Module, expert: nn.Module | Mapping[str, torch.Tensor] | str | Path | LowRankExpert, task: str
) -> ExpertState:
    """The expert as an `ExpertState` by the pretrained model's names; ValueError at a name or shape mismatch."""
    reference = dict(pretrained.named_parameters())
    first = next(iter(reference.values()))
    shapes = {name: p.shape for name, p in reference.items()}
    source = {"names": shapes, "pretrained": pretrained.get_parameter, "dtype": first.dtype, "device": first.device}
    if isinstance(expert, LowRankExpert):
        for name, (b, a) in expert.factors.items():
            if name not in shapes:
                raise ValueError(f"expert for task {task!r}: the pretrained model has no parameter {name!r}")
            if b.dim() != 2 or a.dim() != 2 or b.shape[1] != a.shape[0] or (b.shape[0], a.shape[1]) != shapes[name]:
                raise ValueError(
                    f"expert for task {task!r}: the factors of {name!r} have shapes {tuple(b.shape)} and "
                    f"{tuple(a.shape)}; pass B (d_out, r) and A (r, d_in) with B A of shape {tuple(shapes[name])}"
                )
        factors = {n: (b.detach().to(first), a.detach().to(first)) for n, (b, a) in expert.factors.items()}
        return ExpertState(**source, factors=factors)
    if isinstance(expert, str | Path):
        _check_shapes(shapes, file_shapes(expert), task)
        return ExpertState(**source, path=expert)
    state = dict(expert.named_parameters()) if isinstance(expert, nn.Module) else dict(expert)
    _check_shapes(shapes, {name: tensor.shape for name, tensor in state.items()}, task)
    return ExpertState(**source, tensors={name: state[name].detach().to(p) for name, p in reference.items()})


def _check_shapes(reference: Mapping[str, torch.Size], given: Mapping[str, torch.Size], task: str) -> None:
    for name, shape in reference.items():
        if name not in given:
            raise ValueError(f"expert for task {task!r} has no parameter {name!r} of the pretrained model")
        if given[name] != shape:
            raise ValueError(
                f"expert for task {task!r}: parameter {name!r} has shape {tuple(given[name])}, "
                f"the pretrained model's has {tuple(shape)}"
            )
