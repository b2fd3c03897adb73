"""CLIP zero-shot classification heads: class names x prompt templates through the text tower, cached on disk."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

#: encode_text(texts) -> (len(texts), D) text features (after the text projection), and its companions.
TextEncoder = Callable[[list[str]], torch.Tensor]


class ZeroShotHead(nn.Module):
    """logits = logit_scale * normalize(P f) E^T for image features f, visual projection P, class embeddings E.

    E (shape (C, D)) holds one unit-norm text embedding per class (see `class_embeddings`); P is None when the
    backbone already ends with its projection (open_clip image encoders).
    """

    class_embeddings: torch.Tensor  # buffers, typed for the type checker
    logit_scale: torch.Tensor
    projection: torch.Tensor | None

    def __init__(self, class_embeddings: torch.Tensor, logit_scale: float, projection: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("class_embeddings", class_embeddings.detach().clone())
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))
        self.register_buffer("projection", None if projection is None else projection.detach().clone())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.projection is not None:
            features = features @ self.projection.T
        features = F.normalize(features, dim=-1)
        return self.logit_scale * features @ self.class_embeddings.T.to(features.dtype)


@torch.no_grad()
def class_embeddings(
    encode_text: TextEncoder, class_names: Sequence[str], templates: Sequence[str], batch_size: int = 256
) -> torch.Tensor:
    """E_c = normalize(mean_j normalize(text(template_j(c)))), the CLIP zero-shot weights (Radford et al., 2021).

    Templates are format strings with one `{}` for the class name.
    """
    if not class_names or not templates:
        raise ValueError("zero-shot heads need at least one class name and one template")
    texts = [template.format(name) for name in class_names for template in templates]
    features = torch.cat([encode_text(texts[i : i + batch_size]).float() for i in range(0, len(texts), batch_size)])
    per_template = F.normalize(features, dim=-1).view(len(class_names), len(templates), -1)
    return F.normalize(per_template.mean(1), dim=-1)


def default_cache_dir() -> Path:
    """$MOOFRAME_CACHE/zero_shot_heads, or ~/.cache/mooframe/zero_shot_heads."""
    root = os.environ.get("MOOFRAME_CACHE", Path.home() / ".cache" / "mooframe")
    return Path(root) / "zero_shot_heads"


def cached_zero_shot_head(
    model_key: str,
    task: str,
    class_names: Sequence[str],
    templates: Sequence[str],
    text_tower: Callable[[], tuple[TextEncoder, torch.Tensor | None, float]],
    cache_dir: str | Path | None = None,
    content: str | None = None,
) -> ZeroShotHead:
    """The zero-shot head of `task` for the model `model_key`, read from the cache or built and written there.

    `text_tower()` is called only on a cache miss and returns (encode_text, visual projection or None, logit scale).
    The cache file records the class names, the templates and `content` (a fingerprint of the weights the head
    depends on, e.g. `tensor_fingerprint` of the text tower and projections) and is rebuilt when any changes:
    a different checkpoint under the same id never reuses the old heads.
    """
    fingerprint = hashlib.sha256(json.dumps([list(class_names), list(templates), content]).encode()).hexdigest()
    path = Path(cache_dir or default_cache_dir()) / _safe_name(model_key) / f"{_safe_name(task)}.safetensors"
    if path.is_file():
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("fingerprint") == fingerprint:
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
                return ZeroShotHead(
                    tensors["class_embeddings"], tensors["logit_scale"].item(), tensors.get("projection")
                )
    encode_text, projection, logit_scale = text_tower()
    head = ZeroShotHead(class_embeddings(encode_text, class_names, templates), logit_scale, projection)
    tensors = {name: buffer.contiguous() for name, buffer in head.named_buffers()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"fingerprint": fingerprint, "model": model_key, "task": task})
    return head


def tensor_fingerprint(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 of named tensors (names, dtypes, shapes and bytes), in the order given."""
    digest = hashlib.sha256()
    for name, tensor in tensors:
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _safe_name(key: str) -> str:
    """A file name for a hub id or a path: readable part plus a short hash, so distinct paths never collide."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key.strip("/"))[-60:]
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
