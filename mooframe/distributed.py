"""Data-parallel training on torch.distributed (DDP semantics), used by `solve` when a process group is up.

Every rank draws the same preference and the same global batch (same seeds), loads only its own contiguous shard
of each task's examples (the problem's `batches` shards the indices), and averages across ranks what must agree:
the losses the solver sees, and the gradients (for Gram-based solvers the T x P per-task gradient matrix, before
the Gram matrix G G^T is formed). With equal shards, the mean of the shard losses is the global-batch loss, so a
run on N ranks equals a one-process run with the same global batch. On a single process every function here is
the identity.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a torch.distributed process group with more than one rank is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_writer() -> bool:
    """True on the rank that writes files and shows progress (rank 0)."""
    return rank() == 0


def init_from_environment(device: str) -> bool:
    """Join the process group that `torchrun` describes in the environment (WORLD_SIZE > 1); True if joined.

    NCCL for CUDA devices, gloo otherwise. Nothing happens outside torchrun or when a group is already up.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    if str(device).startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl")
    else:
        dist.init_process_group(backend="gloo")
    return True


def shutdown() -> None:
    """Leave the process group once every rank has finished: a barrier, then `destroy_process_group`.

    Call it after a successful run only (a rank that failed never reaches the barrier). Without it gloo may abort
    at interpreter exit ("terminate called without an active exception").
    """
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank_device(device: str | torch.device) -> torch.device:
    """The device of this rank: a bare "cuda" becomes "cuda:LOCAL_RANK" under torch.distributed."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and is_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank() % torch.cuda.device_count())))
    return device


def shard(batch: Any) -> Any:
    """This rank's contiguous share (along dim 0) of every tensor in a batch of nested lists, tuples and dicts, or of
    a tensor of example indices (what `MergingProblem.batches` splits before loading)."""
    if not is_distributed():
        return batch
    return _shard(batch, rank(), world_size())


def _shard(batch: Any, index: int, count: int) -> Any:
    if isinstance(batch, torch.Tensor):
        if batch.ndim == 0 or batch.shape[0] % count:
            raise ValueError(
                f"a batch tensor of shape {tuple(batch.shape)} cannot be split evenly over {count} ranks; "
                f"use a per-task batch size divisible by {count}"
            )
        return batch.chunk(count)[index]
    if isinstance(batch, Mapping):
        return {key: _shard(value, index, count) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_shard(item, index, count) for item in batch)
    return batch


def mean(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of `tensor` over ranks (a new tensor; `tensor` itself is left as it is)."""
    if not is_distributed():
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total / world_size()


def mean_gradients(params: list[torch.nn.Parameter]) -> None:
    """Replace each `.grad` by its mean over ranks, in one all-reduce of the flattened gradients.

    Parameters without a gradient (no loss reached them; the same on every rank) keep none, as on one process.
    """
    if not is_distributed():
        return
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    flat = mean(torch.cat([p.grad.flatten() for p in params]))
    for p, grad in zip(params, flat.split([p.numel() for p in params]), strict=True):
        p.grad = grad.view_as(p)


def broadcast_parameters(params: list[torch.nn.Parameter]) -> None:
    """Copy rank 0's parameter values to every rank (as DistributedDataParallel does at construction)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when `flag` is true on any rank, so that all ranks take the same branch (e.g. stop on Ctrl-C)."""
    if not is_distributed():
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
