"""Shared by the problems built from pretrained checkpoints: data loading from disk and frozen-part precision."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from mooframe.optional import requires
from mooframe.problems.merging import MergingProblem

#: Storage and autocast dtype of the frozen parts (pretrained model, experts, heads).
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class PretrainedMergingProblem(MergingProblem):
    """A MergingProblem whose frozen parts may be kept in half precision.

    With `precision` "bfloat16" or "float16", the pretrained model, the experts and the heads are stored in that
    dtype (halving their memory) and each forward pass runs under `torch.autocast` to it; trainable parameters
    of the Pareto set model stay float32 and the losses are computed in float32.
    """

    precision: str = "float32"

    def set_precision(self, precision: str) -> None:
        """Store the frozen parts in `precision` ("float32", "bfloat16" or "float16") and compute under autocast."""
        dtype = check_precision(precision)
        self.precision = precision
        self.pretrained.to(dtype)
        self.heads.to(dtype)
        self.expert_states = [state.to(dtype=dtype) for state in self.expert_states]

    def logits(self, solution: Callable[..., torch.Tensor], task: int, inputs: Any) -> torch.Tensor:
        if self.precision == "float32":
            return super().logits(solution, task, inputs)
        with self.autocast():
            return super().logits(solution, task, inputs).float()

    def autocast(self) -> contextlib.AbstractContextManager:
        """`torch.autocast` to the frozen parts' precision on the problem's device (nothing for float32)."""
        if self.precision == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision])


def check_precision(precision: str) -> torch.dtype:
    """The dtype named by `precision`; ValueError listing the known names."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; pass one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


class _OncePerMessage(logging.Filter):
    """Lets each distinct message through once per process (library warnings repeated per task and split)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


_ONCE = _OncePerMessage()


def load_hf_dataset(source: str | None, hub_id: str, split: str, config: str | None = None) -> Any:
    """Split `split` of a Hugging Face dataset: from a `save_to_disk` folder `source`, else `hub_id` in the cache
    (datasets' "Using the latest cached version ..." warning shown once, not once per split)."""
    with requires("clip", "text"):
        import datasets

    loader_log = logging.getLogger("datasets.load")
    if _ONCE not in loader_log.filters:
        loader_log.addFilter(_ONCE)

    if source is not None:
        if not Path(source).is_dir():
            raise FileNotFoundError(
                f"dataset folder {source!r} does not exist; pass a folder written by datasets' save_to_disk"
            )
        loaded = datasets.load_from_disk(source)
        if not isinstance(loaded, datasets.DatasetDict):
            raise ValueError(f"{source} holds a single split; save a DatasetDict with a {split!r} split there")
        if split not in loaded:
            raise ValueError(f"{source} has splits {sorted(loaded)}, not {split!r}; pass one of those")
        return loaded[split]
    try:
        return datasets.load_dataset(hub_id, config, split=split)
    except Exception as error:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ...)
        call = f"datasets.load_dataset({hub_id!r}{'' if config is None else f', {config!r}'})"
        raise FileNotFoundError(
            f"dataset {hub_id!r}{'' if config is None else f' ({config})'} split {split!r} is not in the Hugging Face "
            f"datasets cache and no local copy was given; on a machine with network run {call} (same cache), "
            "or pass a folder written by save_to_disk"
        ) from error


def first(data: Any, limit: int | None) -> Any:
    """The first `limit` examples of `data`, a torch or Hugging Face dataset (all of them when `limit` is None)."""
    if limit is not None and limit < 1:
        raise ValueError(f"example limits must be >= 1 or None, got {limit}")
    if limit is None or limit >= len(data):
        return data
    return data.select(range(limit)) if hasattr(data, "select") else Subset(data, range(limit))


def per_task(values: Sequence[Any] | None, tasks: Sequence[str], what: str) -> list[Any]:
    """One value per task (None for each when `values` is None); ValueError when the count differs."""
    if values is None:
        return [None] * len(tasks)
    if isinstance(values, str | Mapping) or len(values) != len(tasks):
        raise ValueError(f"pass a list of {what} with one entry per task ({len(tasks)}: {', '.join(tasks)})")
    return list(values)
