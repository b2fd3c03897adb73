"""CLIP image classification over the eight tasks of the task-arithmetic benchmark, as a merging problem.

Tasks: SUN397, Stanford Cars, RESISC45, EuroSAT, SVHN, GTSRB, MNIST, DTD. Each task's head is the CLIP zero-shot
head built from its class names and prompt templates (shipped in data/image_tasks.json), cached on disk.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from functools import cache, partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from mooframe.adapters import Backbone
from mooframe.adapters.zero_shot import cached_zero_shot_head
from mooframe.data import decoded_cache
from mooframe.optional import requires
from mooframe.problems.pretrained import PretrainedMergingProblem, check_precision, first, load_hf_dataset, per_task

with requires("clip"):
    from torchvision import transforms

SAVED_DATASET_FILES = ("dataset_dict.json", "state.json")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
#: OpenAI CLIP's input normalization (also open_clip's for these models).
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@cache
def image_tasks() -> dict[str, dict[str, Any]]:
    """Task name -> {"class_names", "templates", "hub_dataset"} for the eight tasks."""
    return json.loads((Path(__file__).parent / "data" / "image_tasks.json").read_text())


class CLIPImageClassification(PretrainedMergingProblem):
    """Merge T CLIP image encoders fine-tuned on T image classification tasks; objectives are the task losses.

    Args:
        tasks: task names among sun397, stanford-cars, resisc45, eurosat, svhn, gtsrb, mnist, dtd.
        model: the pretrained model: for "hf_clip" a save_pretrained folder or hub id (CLIPModel, with its
            tokenizer); for "open_clip" an architecture (ViT-B-32, ViT-B-16, ViT-L-14) or "local-dir:/path".
        family: "hf_clip" (transformers) or "open_clip".
        pretrained_weights: open_clip only: a pretrained tag (e.g. "openai", from the cache) or a checkpoint file.
        experts: one expert per task: for "hf_clip" a folder or hub id (default FusionBench's
            tanganke/<model name>_<task>); for "open_clip" an image-encoder state dict file (required).
        data: one source per task: a `save_to_disk` folder, an image folder (`<root>/<split>/<class name or
            index>/*.png`), or None for the task's hub dataset in the Hugging Face datasets cache.
        train_split, test_split: split names (image folders: sub-folder names).
        max_train_examples, max_test_examples: use only the first examples of each split (None: all).
        head_cache: folder of cached zero-shot heads (default ~/.cache/mooframe/zero_shot_heads).
        precision: "float32", "bfloat16" or "float16" for the frozen parts.
        decoded_cache: keep each split's preprocessed images (uint8 at the model's resolution) in a memory-mapped
            file under $MOOFRAME_CACHE/decoded (`mooframe.data.decoded_cache`), written once by DataLoader workers
            and read by training and evaluation without decoding again; keyed by dataset revision, split,
            transform and example limit. The tensors are identical to those decoded on the fly.
        objective, batch_size, eval_batch_size: as in MergingProblem.
    """

    registry_name = "clip_image_classification"

    path_options = ("model", "pretrained_weights", "experts", "data")
    runtime_options = ("head_cache", "decoded_cache")

    def __init__(
        self,
        tasks: Sequence[str],
        model: str = "openai/clip-vit-base-patch32",
        family: str = "hf_clip",
        pretrained_weights: str | None = None,
        experts: Sequence[str] | None = None,
        data: Sequence[str | None] | None = None,
        train_split: str = "train",
        test_split: str = "test",
        max_train_examples: int | None = None,
        max_test_examples: int | None = None,
        head_cache: str | None = None,
        precision: str = "float32",
        objective: str = "cross_entropy",
        batch_size: int = 16,
        eval_batch_size: int = 256,
        decoded_cache: bool = False,
    ) -> None:
        self.decoded_cache = decoded_cache
        self.tasks, self.model, self.family, self.pretrained_weights = list(tasks), model, family, pretrained_weights
        self.experts = None if experts is None else list(experts)
        self.data = None if data is None else list(data)
        self.head_cache = head_cache
        self.train_split, self.test_split = train_split, test_split
        self.max_train_examples, self.max_test_examples = max_train_examples, max_test_examples
        unknown = [task for task in self.tasks if task not in image_tasks()]
        if unknown or not self.tasks:
            raise ValueError(f"unknown image tasks {unknown}; pass some of {', '.join(image_tasks())}")
        check_precision(precision)
        sources = per_task(experts, self.tasks, "expert checkpoints")
        data_sources = per_task(data, self.tasks, "data sources (folders, or None for the cache)")
        pretrained, expert_models, text_tower, presets, content = _load_clip_family(
            family, model, pretrained_weights, sources, self.tasks
        )
        model_key = f"{family}:{model}:{pretrained_weights}"
        heads = [
            cached_zero_shot_head(
                model_key, t, image_tasks()[t]["class_names"], image_tasks()[t]["templates"], text_tower, head_cache,
                content=content,
            )
            for t in self.tasks
        ]  # fmt: skip
        train, test = [], []
        for task, source in zip(self.tasks, data_sources, strict=True):
            for out, split, limit in ((train, train_split, max_train_examples), (test, test_split, max_test_examples)):
                out.append(_task_images(task, source, split, limit, pretrained.image_size, decoded_cache))
        super().__init__(
            pretrained,
            expert_models,
            heads,
            train,
            test,
            task_names=self.tasks,
            objective=objective,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            upscale_presets=presets,
        )
        self.set_precision(precision)


def _task_images(
    task: str, source: str | None, split: str, limit: int | None, image_size: int, cached: bool = False
) -> Dataset:
    """The first `limit` examples of `task`'s `split`, CLIP-preprocessed to `image_size`: decoded on the fly, or
    with `cached` from the decoded cache (built on first use)."""
    if not cached:
        return first(image_dataset(task, source, split, clip_transform(image_size)), limit)
    decode = clip_decode(image_size)
    images = image_dataset(task, source, split, decode)
    key = {"task": task, "split": split, "revision": images.revision, "transform": repr(decode), "limit": limit}
    return decoded_cache(first(images, limit), key, normalize_pixels)


def _load_clip_family(
    family: str, model: str, pretrained_weights: str | None, experts: list[str | None], tasks: list[str]
) -> tuple[Backbone, list[Any], Callable[[], tuple], dict[str, list[str]], str]:
    """(pretrained backbone, experts, text-tower loader for the heads, up-scaling presets, fingerprint of the
    weights the heads depend on) of a CLIP family."""
    if family == "hf_clip":
        from mooframe.adapters import hf_clip

        expert_models = [
            hf_clip.load_backbone(source or hf_clip.expert_source(model, task))
            for source, task in zip(experts, tasks, strict=True)
        ]
        pretrained = hf_clip.load_backbone(model)
        text_tower = partial(hf_clip.text_tower, model)
        return pretrained, expert_models, text_tower, hf_clip.UPSCALE_PRESETS, hf_clip.text_fingerprint(model)
    if family == "open_clip":
        from mooframe.adapters import open_clip

        if None in experts:
            raise ValueError("open_clip experts have no default location; pass experts=[one state dict file per task]")
        clip = open_clip.load_clip(model, pretrained_weights)  # loaded once: the backbone and the heads' text tower
        return (
            open_clip.OpenCLIPVisionBackbone(clip.visual),
            [open_clip.load_expert_state(source) for source in experts],
            partial(open_clip.text_tower, model, pretrained_weights, clip),
            open_clip.UPSCALE_PRESETS,
            open_clip.text_fingerprint(clip),
        )
    raise ValueError(f"unknown model family {family!r}; pass 'hf_clip' or 'open_clip'")


def clip_transform(image_size: int) -> transforms.Compose:
    """CLIP's evaluation preprocessing: bicubic resize of the short side, center crop, RGB, normalization."""
    return transforms.Compose([clip_decode(image_size), normalize_pixels])


def clip_decode(image_size: int) -> transforms.Compose:
    """The decoding half of `clip_transform`: resize, crop and RGB, as uint8 pixels (3, size, size)."""
    return transforms.Compose(
        [
            transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(image_size),
            _rgb,
            transforms.PILToTensor(),
        ]
    )


def normalize_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (..., 3, H, W) -> CLIP's normalized float input: (x / 255 - mean) / std per channel."""
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (pixels.float().div(255) - mean) / std


def _rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


class ImageDataset(Dataset):
    """(transformed image, label) pairs from a list of images (PIL or paths) and labels; `revision` identifies
    the source's content (a Hugging Face dataset's fingerprint, or a hash of the files' names, sizes and times)."""

    def __init__(
        self, images: Sequence[Any], labels: Sequence[int], transform: Callable[[Any], Any], revision: str = ""
    ) -> None:
        self.images, self.labels, self.transform, self.revision = images, labels, transform, revision

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if not isinstance(image, Image.Image):
            image = Image.open(image)
        return self.transform(image), int(self.labels[index])


def image_dataset(task: str, source: str | None, split: str, transform: Callable[[Any], Any]) -> ImageDataset:
    """Split `split` of `task` from an image folder, a save_to_disk folder, or the hub dataset in the cache."""
    saved = source is not None and any(Path(source, name).is_file() for name in SAVED_DATASET_FILES)
    if source is not None and not saved and Path(source).is_dir():
        if not Path(source, split).is_dir():
            raise FileNotFoundError(
                f"no split {split!r} for {task!r} in {source}: expected the image folder "
                f"{Path(source, split)}/<class>/ or a folder written by datasets' save_to_disk"
            )
        return _image_folder(task, Path(source, split), transform)
    rows = load_hf_dataset(source, image_tasks()[task]["hub_dataset"], split)
    image_column = "image" if "image" in rows.column_names else "img"
    if image_column not in rows.column_names or "label" not in rows.column_names:
        raise ValueError(f"dataset for {task!r} has columns {rows.column_names}; expected 'image' and 'label'")
    revision = getattr(rows, "_fingerprint", "") or ""
    return ImageDataset(_LazyColumn(rows, image_column), rows["label"], transform, revision)


def _image_folder(task: str, root: Path, transform: Callable[[Any], Any]) -> ImageDataset:
    """`root/<class>/<image>` where <class> is a class name of the task or its index."""
    class_names = image_tasks()[task]["class_names"]
    index = {name: i for i, name in enumerate(class_names)} | {str(i): i for i in range(len(class_names))}
    paths, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in index:
            raise ValueError(
                f"image folder {folder} is not a class of {task!r}; name class folders by class name "
                f"(e.g. {class_names[0]!r}) or by class index 0..{len(class_names) - 1}"
            )
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
                labels.append(index[folder.name])
    if not paths:
        raise FileNotFoundError(f"no images under {root}; expected {root}/<class>/<image file>")
    stats = [(str(path.relative_to(root)), path.stat().st_size, path.stat().st_mtime_ns) for path in paths]
    revision = hashlib.sha256(json.dumps([str(root.resolve()), stats]).encode()).hexdigest()
    return ImageDataset(paths, labels, transform, revision)


class _LazyColumn:
    """Row `i`'s value of one column of a Hugging Face dataset, decoded only when read."""

    def __init__(self, rows: Any, column: str) -> None:
        self.rows, self.column = rows, column

    def __getitem__(self, index: int) -> Any:
        return self.rows[index][self.column]

    def __len__(self) -> int:
        return len(self.rows)
