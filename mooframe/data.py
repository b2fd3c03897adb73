"""The input pipeline: seeded batch order, DataLoader workers that decode ahead of the step, sharding, resume.

Which examples form each batch is decided in the main process by a seeded sampler (`StepSampler`), before any
example is loaded; workers only load them. So the batches' contents and order depend on the seed alone, not on
the number of workers, and resuming at step n skips n steps of the sampler without loading a single example.
Datasets held in memory as tensors (`TensorDataset`, a `Subset` of one, or any dataset with a `batch(indices)`
method) are indexed in bulk in the main process: no worker, no per-example copy.

`decoded_cache` writes a dataset's preprocessed images (uint8) once to a memory-mapped file and serves them from
there (`DecodedImages`), so that training and evaluation decode no image again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from mooframe import distributed
from mooframe.atomic import DECODED, artifact_kind, file_sha256, locked, remove_artifact, staged_directory

logger = logging.getLogger(__name__)

#: the most loader processes chosen by default (one core is left to the training step).
MAX_DEFAULT_WORKERS = 8


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def is_in_memory(data: Dataset) -> bool:
    """True for datasets indexed in bulk in the main process: tensors in memory, no decoding to overlap."""
    if isinstance(data, Subset):
        return is_in_memory(data.dataset)
    return isinstance(data, TensorDataset) or callable(getattr(data, "batch", None))


def default_workers(datasets: Sequence[Dataset], batches: int | None = None) -> int:
    """Loader processes by default: 0 for in-memory data; else $MOOFRAME_WORKERS, or min(8, cores - 1), and never
    more than the `batches` to load."""
    if all(is_in_memory(data) for data in datasets):
        return 0
    setting = os.environ.get("MOOFRAME_WORKERS")
    if setting is not None:
        if not setting.isdigit():
            raise ValueError(f"MOOFRAME_WORKERS={setting!r} is not a number of worker processes; pass e.g. 4 or 0")
        workers = int(setting)
    else:
        workers = min(MAX_DEFAULT_WORKERS, available_cores() - 1)
    return max(0, workers if batches is None else min(workers, batches))


def check_workers(workers: int | None) -> None:
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ValueError(f"workers must be a number of processes >= 0 (0: load in the main process), got {workers!r}")


def take(data: Dataset, indices: torch.Tensor) -> Any:
    """The examples `indices` of an in-memory dataset as one batch, by bulk indexing (`is_in_memory(data)`)."""
    if isinstance(data, Subset):
        return take(data.dataset, torch.as_tensor(data.indices)[indices])
    if isinstance(data, TensorDataset):
        return tuple(tensor[indices] for tensor in data.tensors)
    return data.batch(indices)


class StepSampler:
    """Per step, each task's batch indices: a fresh permutation per epoch (seeded from `rng`, one generator per
    task), cut into batches of `batch_size`; a task smaller than a batch yields all its examples each step.
    Under torch.distributed each rank keeps its contiguous share (`distributed.shard`).
    """

    def __init__(self, sizes: Sequence[int], batch_size: int, rng: np.random.Generator) -> None:
        if batch_size < 1 or any(size < 1 for size in sizes):
            raise ValueError(f"a sampler needs batch_size >= 1 and non-empty datasets, got {batch_size}, {sizes}")
        self.sizes, self.batch_size = list(sizes), batch_size
        self._streams = [self._indices(size, int(rng.integers(2**63 - 1))) for size in self.sizes]

    def _indices(self, size: int, seed: int) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        while True:
            order = torch.randperm(size, generator=generator)
            for start in range(0, size - self.batch_size + 1, self.batch_size):
                yield distributed.shard(order[start : start + self.batch_size])
            if size < self.batch_size:
                yield distributed.shard(order)

    def __iter__(self) -> StepSampler:
        return self

    def __next__(self) -> list[torch.Tensor]:
        return [next(stream) for stream in self._streams]

    def skip(self, steps: int) -> None:
        """Advance by `steps` steps without loading anything (exact resume)."""
        for _ in range(steps):
            next(self)


class TrainingBatches:
    """An endless stream of steps, each a list of one collated batch per task, in `StepSampler`'s order.

    In-memory datasets are indexed in the main process. Otherwise one DataLoader loads every task's batches in
    `workers` processes, `prefetch` steps ahead (at least two task batches per worker), into pinned memory when
    `pin_memory`; the loader is created on the first step, so `skip` before it loads nothing.
    """

    def __init__(
        self,
        datasets: Sequence[Dataset],
        batch_size: int,
        rng: np.random.Generator,
        workers: int | None = None,
        pin_memory: bool = False,
        prefetch: int = 2,
    ) -> None:
        check_workers(workers)
        self.datasets = list(datasets)
        self.sampler = StepSampler([len(data) for data in self.datasets], batch_size, rng)
        self.in_memory = all(is_in_memory(data) for data in self.datasets)
        self.workers = default_workers(self.datasets) if workers is None else workers
        self.pin_memory, self.prefetch = pin_memory, prefetch
        self._loader: Iterator[Any] | None = None

    def skip(self, steps: int) -> TrainingBatches:
        if self._loader is not None:
            raise RuntimeError("skip() must come before the first step is loaded")
        self.sampler.skip(steps)
        return self

    def __iter__(self) -> TrainingBatches:
        return self

    def __next__(self) -> list[Any]:
        if self.in_memory:
            return [take(data, indices) for data, indices in zip(self.datasets, next(self.sampler), strict=True)]
        if self._loader is None:
            self._loader = iter(self._data_loader())
        return [next(self._loader) for _ in self.datasets]

    def _data_loader(self) -> DataLoader:
        n_tasks = len(self.datasets)
        options: dict[str, Any] = {}
        if self.workers > 0:
            options["prefetch_factor"] = max(2, math.ceil(self.prefetch * n_tasks / self.workers))
        return DataLoader(
            _TaskExamples(self.datasets),
            batch_sampler=_TaskBatches(self.sampler),
            num_workers=self.workers,
            pin_memory=self.pin_memory,
            **options,
        )


class _TaskExamples(Dataset):
    """Example (task, index) of a list of datasets: what one DataLoader over all tasks loads."""

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        self.datasets = list(datasets)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        task, index = key
        return self.datasets[task][index]

    def __len__(self) -> int:
        return sum(len(data) for data in self.datasets)


class _TaskBatches:
    """The sampler's steps flattened into task batches of (task, index) keys: step 0 task 0, step 0 task 1, ..."""

    def __init__(self, sampler: StepSampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in self.sampler:
            for task, indices in enumerate(step):
                yield [(task, index) for index in indices.tolist()]


def resumed(stream: Iterator[Any], steps: int) -> Iterator[Any]:
    """`stream` from step `steps` on: by its `skip(steps)` when it has one (nothing loaded), else by reading and
    dropping the first `steps` items."""
    skip = getattr(stream, "skip", None)
    return skip(steps) if callable(skip) else itertools.islice(stream, steps, None)


def ordered_batches(
    datasets: Sequence[Dataset], batch_size: int, workers: int | None = None, pin_memory: bool = False
) -> Iterator[tuple[int, Any]]:
    """(task, batch) pairs: each dataset in order, in batches of `batch_size` (a task's last one shorter), task
    after task. Each example is loaded once: by bulk indexing when all are in memory, else by one DataLoader over
    all the tasks (workers started once, prefetching across task boundaries; default `default_workers`)."""
    check_workers(workers)
    keys = [
        (task, torch.arange(start, min(start + batch_size, len(data))))
        for task, data in enumerate(datasets)
        for start in range(0, len(data), batch_size)
    ]
    if all(is_in_memory(data) for data in datasets):
        for task, indices in keys:
            yield task, take(datasets[task], indices)
        return
    workers = default_workers(datasets, len(keys)) if workers is None else workers
    batches = [[(task, index) for index in indices.tolist()] for task, indices in keys]
    loader = DataLoader(_TaskExamples(datasets), batch_sampler=batches, num_workers=workers, pin_memory=pin_memory)
    for (task, _), batch in zip(keys, loader, strict=True):
        yield task, batch


def to_device(inputs: Any, device: torch.device) -> Any:
    """A tensor or a dict of tensors on `device`; asynchronous from pinned memory."""
    non_blocking = device.type == "cuda"
    if isinstance(inputs, Mapping):
        return {key: value.to(device, non_blocking=non_blocking) for key, value in inputs.items()}
    return inputs.to(device, non_blocking=non_blocking)


def solutions_per_pass(solution: Any, n: int, device: torch.device, share: float = 0.5) -> int:
    """How many solutions like `solution` to evaluate per pass over the data, at most `n`: as many as fit in `share`
    of the free memory of `device` (each one's parameters and buffers; tensors count their own size)."""
    if isinstance(solution, torch.Tensor):
        size = solution.numel() * solution.element_size()
    elif isinstance(solution, torch.nn.Module):
        size = sum(t.numel() * t.element_size() for t in itertools.chain(solution.parameters(), solution.buffers()))
    else:
        size = 0
    if size == 0:
        return n
    return max(1, min(n, int(share * free_memory(device) / size)))


def free_memory(device: torch.device) -> int:
    """Bytes free on `device`: CUDA's free memory, or the host's available memory (/proc/meminfo)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as handle:
            fields = dict(line.split(":", 1) for line in handle)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


DECODED_FORMAT = DECODED.format
_PIXELS, _LABELS, _META = "pixels.npy", "labels.npy", "meta.json"


def cache_root() -> Path:
    """$MOOFRAME_CACHE, or ~/.cache/mooframe."""
    return Path(os.environ.get("MOOFRAME_CACHE", Path.home() / ".cache" / "mooframe"))


class DecodedImages(Dataset):
    """(normalize(pixels[i]), label i) from a memory-mapped uint8 array (N, C, H, W); read in bulk (`batch`)."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, normalize: Callable[[torch.Tensor], torch.Tensor]):
        self.pixels, self.labels, self.normalize = pixels, labels, normalize

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.normalize(torch.from_numpy(np.array(self.pixels[index]))), int(self.labels[index])

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = indices.numpy()
        return self.normalize(torch.from_numpy(self.pixels[rows])), torch.from_numpy(self.labels[rows])


def decoded_cache(
    source: Dataset,
    key: Mapping[str, Any],
    normalize: Callable[[torch.Tensor], torch.Tensor],
    root: str | Path | None = None,
    workers: int | None = None,
    batch_size: int = 64,
) -> DecodedImages:
    """`source`, whose examples are (uint8 pixels (C, H, W), label), decoded once into `root`/decoded/<hash of
    `key`>/ and served from that memory-mapped file, with `normalize` applied on read.

    `key` must name everything the pixels depend on (dataset revision, split, transform, example limit): a changed
    key is another entry. An entry whose files do not match the SHA-256 digests recorded when it was written
    (truncated, overwritten, half-written) or whose metadata is unreadable is rebuilt; entries are written to a
    staging folder and renamed into place whole.
    """
    fingerprint = hashlib.sha256(json.dumps([DECODED_FORMAT, dict(key)], sort_keys=True, default=str).encode())
    folder = Path(root or cache_root()) / "decoded" / fingerprint.hexdigest()[:32]
    cached = _read_decoded(folder, fingerprint.hexdigest())
    if cached is None:
        if folder.exists():
            logger.warning("decoded cache %s is corrupt or stale; rebuilding it", folder)
        _write_decoded(source, folder, fingerprint.hexdigest(), dict(key), workers, batch_size)
        cached = _read_decoded(folder, fingerprint.hexdigest())
        if cached is None:
            raise OSError(f"the decoded cache {folder} did not read back as written; check the disk it is on")
    return DecodedImages(*cached, normalize)


def _write_decoded(
    source: Dataset, folder: Path, fingerprint: str, key: dict[str, Any], workers: int | None, batch_size: int
) -> None:
    if len(source) == 0:
        raise ValueError("cannot cache an empty dataset")
    if folder.is_dir() and artifact_kind(folder) is None:  # its meta.json unreadable: still the cache's own entry
        with locked(folder):
            remove_artifact(folder)
    with staged_directory(folder, DECODED) as staging:
        pixels, labels, offset = None, np.empty(len(source), dtype=np.int64), 0
        for _, (images, targets) in ordered_batches([source], batch_size, workers):
            if images.dtype != torch.uint8:
                raise ValueError(f"the decoded cache stores uint8 pixels; the source yields {images.dtype}")
            if pixels is None:  # the shape of the first batch's images: no example decoded twice
                shape = (len(source), *images.shape[1:])
                pixels = np.lib.format.open_memmap(staging / _PIXELS, mode="w+", dtype=np.uint8, shape=shape)
            pixels[offset : offset + len(targets)] = images.numpy()
            labels[offset : offset + len(targets)] = torch.as_tensor(targets).numpy()
            offset += len(targets)
        pixels.flush()
        del pixels
        np.save(staging / _LABELS, labels)
        meta = {"format": DECODED_FORMAT, "fingerprint": fingerprint, "key": key, "shape": list(shape)}
        meta |= {name: file_sha256(staging / name) for name in (_PIXELS, _LABELS)}
        (staging / _META).write_text(json.dumps(meta, indent=1, default=str))


def _read_decoded(folder: Path, fingerprint: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The entry's (pixels memory map, labels) if its metadata, digests and shapes all check out, else None."""
    try:
        meta = json.loads((folder / _META).read_text())
        if meta.get("format") != DECODED_FORMAT or meta.get("fingerprint") != fingerprint:
            return None
        if any(file_sha256(folder / name) != meta.get(name) for name in (_PIXELS, _LABELS)):
            return None
        pixels = np.load(folder / _PIXELS, mmap_mode="r")
        labels = np.load(folder / _LABELS)
    except (OSError, ValueError, AttributeError):
        return None
    if list(pixels.shape) != meta.get("shape") or labels.shape != pixels.shape[:1] or pixels.dtype != np.uint8:
        return None
    return pixels, labels
