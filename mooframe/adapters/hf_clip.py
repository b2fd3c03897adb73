"""Hugging Face CLIP vision towers (`transformers.CLIPVisionModel`), e.g. openai/clip-vit-base-patch32.

Experts follow the FusionBench naming: `tanganke/clip-vit-base-patch32_<task>` (one CLIPVisionModel per task).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open

from mooframe.adapters import Backbone
from mooframe.adapters.hub import from_pretrained_offline, missing_checkpoint_message
from mooframe.adapters.zero_shot import TextEncoder, tensor_fingerprint
from mooframe.optional import requires

with requires("clip"):
    from transformers import AutoTokenizer, CLIPModel, CLIPVisionModel

#: Module-name patterns (regular expressions, matched in full) of the PWE-MoE up-scaling presets.
#: transformers 5 dropped the `vision_model` level of CLIPVisionModel; 4.x still has it.
UPSCALE_PRESETS: dict[str, list[str]] = {
    "mlp": [r"model\.(?:vision_model\.)?encoder\.layers\.\d+\.mlp"],
    "attention_mlp": [
        r"model\.(?:vision_model\.)?encoder\.layers\.\d+\.mlp",
        r"model\.(?:vision_model\.)?encoder\.layers\.\d+\.self_attn",
    ],
    # The paper's "(All)" under Hugging Face names: open_clip's conv1 / ln_pre / ln_post are patch_embedding /
    # pre_layrnorm / post_layernorm, ln_1 / ln_2 are layer_norm1 / layer_norm2 (see open_clip.UPSCALE_PRESETS).
    "all": [
        r"model\.(?:vision_model\.)?(?:embeddings\.patch_embedding|pre_layrnorm|post_layernorm)",
        r"model\.(?:vision_model\.)?encoder\.layers\.\d+\.(?:layer_norm1|self_attn|layer_norm2|mlp)",
    ],
}


class HFCLIPVisionBackbone(Backbone):
    """pixel_values -> pooled image features (the tower's pooler output, before the visual projection)."""

    family = "hf_clip"

    def __init__(self, model: CLIPVisionModel) -> None:
        super().__init__(model)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).pooler_output

    @property
    def image_size(self) -> int:
        return self.model.config.image_size


def expert_source(model: str, task: str) -> str:
    """The FusionBench hub id of `task`'s expert for the pretrained `model`: tanganke/<model name>_<task>."""
    return f"tanganke/{model.rstrip('/').split('/')[-1]}_{task}"


#: Keys of a full CLIPModel checkpoint that its vision tower does not use (regular expressions, searched).
TEXT_TOWER_KEYS = (r"^text_model\.", r"^text_projection\.", r"^visual_projection\.", r"^logit_scale$")


def load_backbone(source: str) -> HFCLIPVisionBackbone:
    """The vision tower saved at `source` (a save_pretrained folder, or a hub id in the Hugging Face cache): a
    CLIPVisionModel, or the vision part of a full CLIPModel, whose text-tower keys are skipped without a report
    (any other unexpected or missing key is still reported)."""
    with _ignoring_unexpected(CLIPVisionModel, TEXT_TOWER_KEYS):
        return HFCLIPVisionBackbone(from_pretrained_offline(CLIPVisionModel, source, "CLIP vision model"))


@contextmanager
def _ignoring_unexpected(cls: type, patterns: tuple[str, ...]) -> Iterator[None]:
    """While loading, `cls` ignores checkpoint keys matching `patterns` (transformers reads the class attribute)."""
    saved = cls._keys_to_ignore_on_load_unexpected
    cls._keys_to_ignore_on_load_unexpected = [*(saved or []), *patterns]
    try:
        yield
    finally:
        cls._keys_to_ignore_on_load_unexpected = saved


def text_fingerprint(source: str) -> str:
    """A fingerprint of what zero-shot heads depend on in the CLIPModel checkpoint at `source`: the text tower,
    both projections and the logit scale (`tensor_fingerprint`, read from the safetensors files without building
    the model), or the bytes of the weight files of a checkpoint without safetensors."""
    folder = Path(source)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            folder = Path(snapshot_download(source, local_files_only=True))
        except (LocalEntryNotFoundError, OSError, ValueError) as error:
            raise FileNotFoundError(missing_checkpoint_message(source, "CLIP model with its text tower")) from error
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return tensor_fingerprint(_text_tensors(files))
    digest = hashlib.sha256()
    for file in sorted(folder.glob("*.bin")) + sorted(folder.glob("*.pt")):
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def _text_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    pattern = re.compile("|".join(TEXT_TOWER_KEYS))
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in sorted(handle.keys()):  # noqa: SIM118
                if pattern.search(key):
                    yield key, handle.get_tensor(key)


def text_tower(source: str) -> tuple[TextEncoder, torch.Tensor, float]:
    """(encode_text, visual projection weight, logit scale) of the full CLIPModel at `source` (for zero-shot heads)."""
    clip = from_pretrained_offline(CLIPModel, source, "CLIP model with its text tower").eval()
    tokenizer = from_pretrained_offline(AutoTokenizer, source, "CLIP tokenizer")

    def encode_text(texts: list[str]) -> torch.Tensor:
        tokens = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return clip.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).pooler_output

    return encode_text, clip.visual_projection.weight.detach(), clip.logit_scale.exp().item()
