"""Write a materialized solution as an ordinary checkpoint of its model family, with a JSON card.

| family (`Backbone.family`) | what is written |
| --- | --- |
| `hf_*` (hf_clip, hf_gpt2, hf_auto) | the `save_pretrained` folder (`from_pretrained` loads it), tokenizer included |
| `open_clip` | `open_clip_model.safetensors`: the tower's state dict under open_clip's checkpoint keys (`visual.*`) |
| anything else | `model.safetensors`: the module's state dict (or `{"solution": tensor}` for a decision vector) |

Every export is a directory holding those files and `mooframe_card.json` (its artifact marker, see
`mooframe.atomic`). It is written to a temporary sibling and swapped into place at the end, so an interrupted
export leaves no partial model behind. A model with non-finite parameters is refused.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from mooframe.adapters import Backbone
from mooframe.atomic import EXPORT, check_output, staged_directory
from mooframe.pareto_set import FunctionalModel

CARD_FILE = "mooframe_card.json"
OPEN_CLIP_FILE = "open_clip_model.safetensors"
SAFETENSORS_FILE = "model.safetensors"


def export_solution(
    solution: Any, path: str | Path, card: dict[str, Any], force: bool = False, inputs: Sequence[str | Path] = ()
) -> Path:
    """Write `solution` to the directory `path` in its family's format, with `card` as mooframe_card.json.

    `path` must be new or empty, or (with `force`) an export mooframe wrote; never a folder of anything else, nor
    inside, equal to or around any of `inputs` (the run it comes from). A replaced export is swapped out only once
    the new one is complete.
    """
    path = check_output(path, EXPORT, inputs, replace=force)
    _check_finite(solution)
    with staged_directory(path, EXPORT, inputs, replace=force) as staging:
        family = _write_checkpoint(solution, staging)
        card = {"format": EXPORT.format, "family": family, **card}
        (staging / CARD_FILE).write_text(json.dumps(card, indent=2))
        _share_like_directory(staging)
    return path


def _check_finite(solution: Any) -> None:
    """ValueError naming the parameters of `solution` that hold NaN or inf."""
    if isinstance(solution, torch.Tensor):
        tensors = {"solution": solution}
    else:
        tensors = solution.params if isinstance(solution, FunctionalModel) else _as_module(solution).state_dict()
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"the model to export has non-finite parameters {bad[:5]}; refusing to export it")


def _write_checkpoint(solution: Any, directory: Path) -> str:
    """Write the checkpoint files of `solution` into the existing `directory`; return the family written."""
    if isinstance(solution, torch.Tensor):
        save_file({"solution": solution.detach().cpu().contiguous()}, str(directory / SAFETENSORS_FILE))
        return "tensor"
    module = _as_module(solution)
    family, library_model = (module.family, module.model) if isinstance(module, Backbone) else ("torch", module)
    if family.startswith("hf_"):
        library_model.save_pretrained(str(directory))
        tokenizer = getattr(module, "tokenizer", None)  # hf_auto backbones carry theirs: the folder is complete
        if tokenizer is not None:
            tokenizer.save_pretrained(str(directory))
    elif family == "open_clip":
        # open_clip checkpoints hold the whole CLIP model; a visual tower alone goes under its `visual.` keys.
        prefix = "" if hasattr(library_model, "visual") else "visual."
        save_file(_plain_state(library_model, prefix), str(directory / OPEN_CLIP_FILE))
    else:
        save_file(_plain_state(library_model), str(directory / SAFETENSORS_FILE))
    return family


def _as_module(solution: Any) -> nn.Module:
    """`solution` as a standalone module: a `FunctionalModel`'s parameters are written into a copy of its module."""
    if isinstance(solution, nn.Module):
        return solution
    if isinstance(solution, FunctionalModel):
        module = copy.deepcopy(solution.module)
        with torch.no_grad():
            unexpected = module.load_state_dict(solution.params, strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"the solution's parameters {unexpected[:5]} are not in its module")
        return module
    raise ValueError(
        f"cannot export a solution of type {type(solution).__name__}; "
        "export needs an nn.Module, a FunctionalModel or a tensor"
    )


def _share_like_directory(directory: Path) -> None:
    """Give the files the directory's (umask) read/write bits: safetensors writes its files 0600."""
    mode = directory.stat().st_mode & 0o666
    for file in directory.rglob("*"):
        if file.is_file():
            file.chmod(mode)


def _plain_state(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """The module's state dict on CPU, contiguous, with tensors that share storage copied apart (safetensors)."""
    state, seen = {}, set()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        state[prefix + name] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return state
