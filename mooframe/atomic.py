"""Atomic directory writes: a run, a checkpoint or an export appears whole, or not at all."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_directory(path: str | Path) -> Iterator[Path]:
    """Yield a fresh hidden sibling folder of `path` to write into; it replaces `path` only if the block completes.

    On any exception (Ctrl-C included) the staging folder is removed and an existing `path` is left untouched.
    The folder is made with `mkdir`, so it gets the umask's permissions (not mkdtemp's 0700).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    staging.mkdir()
    try:
        yield staging
        _replace_directory(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace_directory(staging: Path, directory: Path) -> None:
    """Move `staging` to `directory`, swapping out an existing one only once the new one is complete."""
    if directory.exists():
        backup = directory.with_name(f".{directory.name}.old")
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(directory, backup)
        os.replace(staging, directory)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(staging, directory)
