"""Offline loading of Hugging Face checkpoints: a local directory or the Hugging Face cache, never a download."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def from_pretrained_offline(cls: type[T], source: str, what: str, **kwargs: Any) -> T:
    """`cls.from_pretrained(source, local_files_only=True)`; FileNotFoundError naming the path or hub id expected."""
    try:
        return cls.from_pretrained(source, local_files_only=True, **kwargs)
    except OSError as error:
        raise FileNotFoundError(missing_checkpoint_message(source, what)) from error


def missing_checkpoint_message(source: str, what: str) -> str:
    """What is missing and the two ways to provide it (a local folder, or the hub id in the Hugging Face cache)."""
    from huggingface_hub.constants import HF_HUB_CACHE  # installed with transformers, which loaded `source`

    if Path(source).exists() or source.startswith((".", "/", "~")):
        return (
            f"{what}: no loadable checkpoint at the local path {source!r}; "
            "pass a folder written by save_pretrained (config.json + model.safetensors)"
        )
    return (
        f"{what}: {source!r} is not a local folder and not in the Hugging Face cache ({HF_HUB_CACHE}); "
        f"on a machine with network run `hf download {source}` (same cache), or pass a local folder "
        "written by save_pretrained"
    )
