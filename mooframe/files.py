"""Validated reading of the JSON and safetensors files mooframe writes (runs, checkpoints)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from mooframe.atomic import file_sha256


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; FileNotFoundError or ValueError naming the file otherwise."""
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"corrupt JSON in {path}: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def read_safetensors(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors in `path`, after checking the file's SHA-256 against `sha256` when one was recorded."""
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}")
    if sha256 is not None and file_sha256(path) != sha256:
        raise ValueError(f"{path} does not match the SHA-256 recorded when it was saved: it was changed or truncated")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"corrupt safetensors file {path}: {error}") from error


#: JSON types a schema names, and how an error message says them.
_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number"}


_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_fields(
    data: dict[str, Any], schema: dict[str, tuple[type | None, ...]], path: Path, prefix: str = ""
) -> None:
    """Each key of `schema` is in `data` with a value of one of its types (None: JSON null); ValueError naming the
    file and the key otherwise. An int is a number but a bool is neither."""
    for key, types in schema.items():
        if key not in data:
            raise ValueError(f"{path}: key {prefix + key!r} is missing")
        value = data[key]
        ok = any(
            value is None if t is None else isinstance(value, t) and not (isinstance(value, bool) and t is not bool)
            for t in (*types, *((int,) if float in types else ()))
        )
        if not ok:
            wanted = " or ".join("null" if t is None else _JSON_TYPES.get(t, t.__name__) for t in types)
            raise ValueError(f"{path}: key {prefix + key!r} must be {wanted}, got {json.dumps(value)[:60]}")


def check_file_hashes(files: dict[str, Any], names: Sequence[str], path: Path) -> dict[str, str]:
    """The recorded SHA-256 of each of `names` in the "files" object of the JSON file `path`."""
    for name in names:
        if not isinstance(files.get(name), str) or not _SHA256.fullmatch(files[name]):
            raise ValueError(f"{path}: key 'files.{name}' must be the file's SHA-256 (64 hex digits)")
    return {name: files[name] for name in names}
