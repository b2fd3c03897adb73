"""Multi-task digits: the embedded default problem, built from scikit-learn's bundled handwritten digits.

Each task classifies the 8x8 digits (`sklearn.datasets.load_digits`, no download) seen through one transform
(upright, rotated by 90 degrees, inverted intensities, mirrored, upside down). A tiny CLIP vision transformer
(`transformers.CLIPVisionModel` behind the Hugging Face CLIP adapter, so merging runs the same up-scaling code as
ViT-B/32) is pretrained on a pretext task (which of four rotations was applied), every task gets a linear head
fitted on the pretrained features and frozen, and one expert per task is fine-tuned from the pretrained weights
under that head. The build is deterministic and cached as safetensors + JSON in the user cache directory.
Optionally a fraction of the training digits is held out from the build and becomes the merge's training data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from mooframe.optional import requires
from mooframe.problems.merging import MergingProblem

with requires("digits"):
    from sklearn.datasets import load_digits
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from mooframe.adapters.hf_clip import UPSCALE_PRESETS, HFCLIPVisionBackbone

logger = logging.getLogger(__name__)

#: Task name -> transform of a batch of images (N, 1, 8, 8) with intensities in [0, 1].
TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "upright": lambda x: x,
    "rotated": lambda x: torch.rot90(x, 1, dims=(2, 3)),
    "inverted": lambda x: 1.0 - x,
    "mirrored": lambda x: torch.flip(x, dims=(3,)),
    "upside_down": lambda x: torch.rot90(x, 2, dims=(2, 3)),
}
DEFAULT_TASKS = ("upright", "rotated", "inverted", "mirrored")

#: Everything the cached weights depend on; bump FORMAT when the build recipe changes.
FORMAT = "mooframe-digits/1"
ARCHITECTURE = dict(
    image_size=8,
    patch_size=2,
    num_channels=1,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
)
RECIPE: dict[str, Any] = dict(
    test_fraction=0.3, pretext_steps=300, expert_steps=150, batch_size=64, lr=2e-3, expert_modules="attention_mlp"
)


class MultiTaskDigits(MergingProblem):
    """Digit classification under T transforms, merged from T experts of a tiny CLIP vision transformer.

    Objectives are the per-task errors 1 - accuracy on a held-out split (30% of the 1797 digits). The merge trains
    on the experts' training split, or with `merge_fraction` > 0 on that fraction of it, held out from the build
    (pretraining, heads and experts), so that the merge's training losses are unbiased estimates of its test losses.

    Args:
        tasks: transform names, at least one, each at most once; known: upright, rotated, inverted, mirrored,
            upside_down.
        seed: seeds the data split, the pretraining and the fine-tuning; each seed is built and cached once.
        batch_size: training examples per task per step.
        merge_fraction: fraction of the training split held out from the build as the merge's training data, in
            [0, 1); 0 (default) trains the merge on the experts' own training data. Each value is built once.
        cache_dir: where the build is cached; default $MOOFRAME_CACHE, else $XDG_CACHE_HOME/mooframe, else
            ~/.cache/mooframe.
        progress: show progress bars while building (the first use of a seed and merge_fraction).
    """

    registry_name = "digits"

    runtime_options = ("cache_dir", "progress")

    def __init__(
        self,
        tasks: Sequence[str] = DEFAULT_TASKS,
        seed: int = 0,
        batch_size: int = 16,
        cache_dir: str | None = None,
        merge_fraction: float = 0.0,
        progress: bool = True,
    ) -> None:
        tasks = list(tasks)
        unknown = [t for t in tasks if t not in TRANSFORMS]
        if unknown or not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(
                f"tasks {tasks} must be distinct names among {', '.join(TRANSFORMS)} (at least one); unknown: {unknown}"
            )
        if not 0 <= merge_fraction < 1:
            raise ValueError(f"merge_fraction must be in [0, 1), got {merge_fraction}")
        self.tasks, self.seed, self.cache_dir, self.merge_fraction = tasks, seed, cache_dir, merge_fraction
        self.progress = progress
        train, test = split_digits(seed)
        build_split, merge_split = hold_out(train, merge_fraction)
        if merge_fraction and not len(merge_split[1]):
            raise ValueError(f"merge_fraction {merge_fraction} holds out no digit of the {len(train[1])} for training")
        path = cache_path(cache_dir, seed, merge_fraction)
        pretrained, heads, experts = _load_or_build(seed, path, merge_fraction, progress)
        super().__init__(
            pretrained,
            [experts[t] for t in tasks],
            [heads[t] for t in tasks],
            [task_dataset(merge_split if merge_fraction else build_split, t) for t in tasks],
            [task_dataset(test, t) for t in tasks],
            task_names=tasks,
            batch_size=batch_size,
            upscale_presets=UPSCALE_PRESETS,
        )


def default_cache_dir() -> Path:
    """$MOOFRAME_CACHE, else $XDG_CACHE_HOME/mooframe, else ~/.cache/mooframe."""
    if os.environ.get("MOOFRAME_CACHE"):
        return Path(os.environ["MOOFRAME_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "mooframe"
    return Path.home() / ".cache" / "mooframe"


def cache_path(cache_dir: str | os.PathLike | None, seed: int, merge_fraction: float = 0.0) -> Path:
    """The safetensors file of the build for `seed` and `merge_fraction` (its JSON manifest sits beside it)."""
    name = f"seed{seed}" + (f"-merge{merge_fraction:g}" if merge_fraction else "")
    return Path(cache_dir or default_cache_dir()) / "digits" / f"{name}.safetensors"


def split_digits(seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) for train and test: the 1797 digits as (N, 1, 8, 8) in [0, 1], split by `seed`."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = int(RECIPE["test_fraction"] * len(labels))
    test, train = order[:n_test], order[n_test:]
    return (images[train], labels[train]), (images[test], labels[test])


def hold_out(
    split: tuple[torch.Tensor, torch.Tensor], fraction: float
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(the rest, the held-out part): the first `fraction` of `split` (already shuffled) held out."""
    images, labels = split
    n = round(fraction * len(labels))
    return (images[n:], labels[n:]), (images[:n], labels[:n])


def task_dataset(split: tuple[torch.Tensor, torch.Tensor], task: str) -> TensorDataset:
    """The split's images under task `task`'s transform, normalized to [-1, 1], with their digit labels."""
    images, labels = split
    return TensorDataset(2.0 * TRANSFORMS[task](images) - 1.0, labels)


def _new_backbone() -> HFCLIPVisionBackbone:
    """A randomly initialized tiny CLIP vision tower (torch's global seed sets the initialization)."""
    return HFCLIPVisionBackbone(CLIPVisionModel(CLIPVisionConfig(**ARCHITECTURE)))


def _load_or_build(
    seed: int, path: Path, merge_fraction: float = 0.0, progress: bool = True
) -> tuple[HFCLIPVisionBackbone, dict[str, nn.Linear], dict[str, dict[str, torch.Tensor]]]:
    """The pretrained backbone, the frozen heads and the expert state dicts of every task, from the cache.

    A missing, stale or corrupt cache (checked against the SHA-256 in its JSON manifest) is rebuilt.
    """
    tensors = _read_cache(path, merge_fraction)
    if tensors is None:
        tensors = build(seed, merge_fraction, progress)
        _write_cache(path, tensors, merge_fraction)
    pretrained = _new_backbone()
    pretrained.load_state_dict(_prefixed(tensors, "pretrained."))
    heads = {}
    for task in TRANSFORMS:
        heads[task] = nn.Linear(ARCHITECTURE["hidden_size"], 10)
        heads[task].load_state_dict(_prefixed(tensors, f"head.{task}."))
    experts = {task: _prefixed(tensors, f"expert.{task}.") for task in TRANSFORMS}
    return pretrained, heads, experts


def build(seed: int, merge_fraction: float = 0.0, progress: bool = True) -> dict[str, torch.Tensor]:
    """Pretrain on the rotation pretext task, fit a frozen head per task, fine-tune one expert per task, all on
    the training split less its held-out `merge_fraction`."""
    with torch_threads(1):
        return _build(seed, merge_fraction, progress)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` intra-op threads (then restore the previous number).

    The digits model is so small that thread synchronisation dominates: on a busy 2-core machine one thread
    builds it in several times less CPU time than two (docs/benchmarks.md, benchmarks/digits_threads.py).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _build(seed: int, merge_fraction: float, progress: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    train, _ = hold_out(split_digits(seed)[0], merge_fraction)
    generator = torch.Generator().manual_seed(seed)
    backbone = _new_backbone()
    images = 2.0 * train[0] - 1.0
    rotations = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)])
    pretext_labels = torch.arange(4).repeat_interleave(len(images))
    _train(
        backbone,
        nn.Linear(ARCHITECTURE["hidden_size"], 4),
        TensorDataset(rotations, pretext_labels),
        RECIPE["pretext_steps"],
        generator,
        "pretrain (rotation pretext)" if progress else None,
    )
    tensors = {f"pretrained.{k}": v for k, v in backbone.state_dict().items()}
    for task in tqdm(TRANSFORMS, desc="experts", disable=not progress):
        data = task_dataset(train, task)
        head = _linear_probe(backbone, data)
        expert = _new_backbone()
        expert.load_state_dict(backbone.state_dict())
        _freeze_outside(expert, UPSCALE_PRESETS[RECIPE["expert_modules"]])
        _train(expert, head.requires_grad_(False), data, RECIPE["expert_steps"], generator, None)
        tensors.update({f"head.{task}.{k}": v for k, v in head.state_dict().items()})
        tensors.update({f"expert.{task}.{k}": v for k, v in expert.named_parameters()})
    return {k: v.detach().contiguous() for k, v in tensors.items()}


def _linear_probe(backbone: nn.Module, data: TensorDataset, steps: int = 200) -> nn.Linear:
    """A 10-class linear head fitted (full-batch L-BFGS, weight decay 1e-3) on the frozen backbone's features."""
    images, labels = data.tensors
    with torch.no_grad():
        features = backbone.eval()(images)
    head = nn.Linear(features.shape[1], 10)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(features), labels) + 1e-3 * head.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def _train(
    backbone: nn.Module,
    head: nn.Module,
    data: TensorDataset,
    steps: int,
    generator: torch.Generator,
    desc: str | None,
) -> None:
    images, labels = data.tensors
    params = [p for p in (*backbone.parameters(), *head.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=RECIPE["lr"], weight_decay=0.0)
    backbone.train()
    for _ in tqdm(range(steps), desc=desc, disable=desc is None, leave=False):
        index = torch.randint(len(labels), (RECIPE["batch_size"],), generator=generator)
        loss = F.cross_entropy(head(backbone(images[index])), labels[index])
        opt.zero_grad()
        loss.backward()
        opt.step()
    backbone.eval()


def _freeze_outside(backbone: nn.Module, patterns: Sequence[str]) -> None:
    """Fine-tune only the modules named by `patterns` (attention and MLP blocks).

    Why: in a two-layer tower the embeddings and layer norms would carry much of each task vector, and merging
    methods up-scale attention and MLP blocks only; ViT-B/32's task vectors live mostly in those blocks.
    """
    for name, p in backbone.named_parameters():
        p.requires_grad_(any(re.match(rf"{pattern}\.", name) for pattern in patterns))
    if not any(p.requires_grad for p in backbone.parameters()):
        raise RuntimeError(f"no parameter of the digits backbone matches {list(patterns)}")


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _manifest(path: Path) -> Path:
    return path.with_suffix(".json")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _expected_manifest(merge_fraction: float) -> dict:
    recipe = {**RECIPE, "merge_fraction": merge_fraction}
    return {"format": FORMAT, "architecture": ARCHITECTURE, "recipe": recipe, "tasks": list(TRANSFORMS)}


def _read_cache(path: Path, merge_fraction: float) -> dict[str, torch.Tensor] | None:
    """The cached tensors, or None (with a warning) when missing, built by another recipe, or corrupt."""
    manifest_path = _manifest(path)
    if not path.is_file() or not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        expected = _expected_manifest(merge_fraction)
        if {k: manifest.get(k) for k in expected} != expected:
            logger.warning("digits cache %s was built by another recipe: rebuilding", path)
            return None
        if manifest.get("sha256") != _sha256(path):
            logger.warning("digits cache %s does not match its checksum (corrupt): rebuilding", path)
            return None
        return load_file(str(path))
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, OSError, ValueError) as error:
        logger.warning("digits cache %s is unreadable (%s): rebuilding", path, error)
        return None


def _write_cache(path: Path, tensors: dict[str, torch.Tensor], merge_fraction: float) -> None:
    """Write the tensors, then the manifest with their checksum, each atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    save_file(tensors, str(staging))
    manifest = {**_expected_manifest(merge_fraction), "sha256": _sha256(staging)}
    os.replace(staging, path)
    staging_manifest = staging.with_suffix(".json")
    staging_manifest.write_text(json.dumps(manifest, indent=2))
    os.replace(staging_manifest, _manifest(path))
