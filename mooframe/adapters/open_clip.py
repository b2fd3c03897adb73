"""open_clip image encoders (ViT-B/32, ViT-B/16, ViT-L/14) with experts in the task-vectors format.

An expert is a state dict of the image encoder (Ilharco et al., "Editing Models with Task Arithmetic"): keys of
`model.visual` itself, or prefixed `visual.` / `model.visual.` as the task-vectors `ImageEncoder` writes them.
Files are read with safetensors or `torch.load(weights_only=True)`; a pickled module is refused.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from mooframe.adapters import Backbone
from mooframe.optional import requires

with requires("clip"):
    import open_clip

from mooframe.adapters.zero_shot import TextEncoder, tensor_fingerprint

#: The architectures of the paper's CLIP experiments (open_clip names).
ARCHITECTURES = ("ViT-B-32", "ViT-B-16", "ViT-L-14")

#: Module-name patterns (regular expressions, matched in full) of the PWE-MoE up-scaling presets.
UPSCALE_PRESETS: dict[str, list[str]] = {
    "mlp": [r"model\.transformer\.resblocks\.\d+\.mlp"],
    "attention_mlp": [r"model\.transformer\.resblocks\.\d+\.mlp", r"model\.transformer\.resblocks\.\d+\.attn"],
    # The paper's "(All)" (Table 8), from the authors' module list: the stem and head norms and every block's
    # norms, attention and MLP. Their list also names `ln_attn` (parameterless in these models, never selected)
    # and the text tower's token_embedding and ln_final, which an image encoder does not hold (docs/pwe-moe.md).
    "all": [
        r"model\.(?:conv1|ln_pre|ln_post)",
        r"model\.transformer\.resblocks\.\d+\.(?:ln_1|attn|ln_attn|ln_2|mlp)",
    ],
}

_PREFIXES = ("model.visual.", "visual.")


class OpenCLIPVisionBackbone(Backbone):
    """images -> projected image features (open_clip's `visual` tower, whose last step is the visual projection)."""

    family = "open_clip"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    @property
    def image_size(self) -> int:
        size = self.model.image_size
        return size[0] if isinstance(size, tuple | list) else size


def load_clip(model: str, pretrained: str | None = None) -> nn.Module:
    """The full open_clip model: `model` an architecture name (with `pretrained` a tag such as "openai" found in
    the cache, or a checkpoint file), or "local-dir:/path" holding open_clip_config.json and the weights."""
    if model.startswith("local-dir:"):
        if not Path(model.removeprefix("local-dir:")).is_dir():
            raise FileNotFoundError(f"open_clip model folder {model.removeprefix('local-dir:')!r} does not exist")
    elif model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture {model!r}; the paper's are {', '.join(ARCHITECTURES)}")
    if pretrained is not None and ("/" in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors"))):
        if not Path(pretrained).is_file():
            raise FileNotFoundError(f"open_clip checkpoint file {pretrained!r} does not exist")
    try:
        return open_clip.create_model(model, pretrained=pretrained).eval()
    except RuntimeError as error:
        raise FileNotFoundError(
            f"could not load open_clip {model!r} with pretrained={pretrained!r} offline ({error}); "
            "download the weights once with open_clip.create_model(model, pretrained=tag) on a machine with "
            "network (they land in the Hugging Face cache), or pass a checkpoint file path"
        ) from error


def load_backbone(model: str, pretrained: str | None = None) -> OpenCLIPVisionBackbone:
    """The image encoder of `load_clip(model, pretrained)`."""
    return OpenCLIPVisionBackbone(load_clip(model, pretrained).visual)


def text_fingerprint(clip: nn.Module) -> str:
    """`tensor_fingerprint` of everything in a loaded open_clip model but its image encoder: what the zero-shot
    heads depend on (text tower, text projection, logit scale)."""
    return tensor_fingerprint((k, v) for k, v in clip.state_dict().items() if not k.startswith("visual."))


def load_expert_state(path: str | Path) -> dict[str, torch.Tensor]:
    """An expert's image-encoder state dict from `path`, keyed like the backbone's parameters (`model.<name>`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"expert checkpoint {str(path)!r} does not exist; pass one image-encoder state dict per task "
            "(.safetensors, or .pt readable with torch.load(weights_only=True))"
        )
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise ValueError(
                f"{path} is a pickled module, not a state dict; convert it once where you trust the file: "
                "safetensors.torch.save_file(torch.load(path, weights_only=False).state_dict(), 'expert.safetensors')"
            ) from error
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a state dict of the image encoder")
    prefixed = any(key.startswith(_PREFIXES) for key in state)
    visual = {}
    for key, value in state.items():
        prefix = next((p for p in _PREFIXES if key.startswith(p)), None)
        if prefix is not None or not prefixed:
            visual[f"model.{key.removeprefix(prefix or '')}"] = value
    return visual


def text_tower(
    model: str, pretrained: str | None = None, clip: nn.Module | None = None
) -> tuple[TextEncoder, None, float]:
    """(encode_text, None, logit scale): the image encoder already applies the visual projection. `clip`: the
    already loaded `load_clip(model, pretrained)`, not loaded again."""
    clip = load_clip(model, pretrained) if clip is None else clip
    tokenizer = open_clip.get_tokenizer(model)

    def encode_text(texts: list[str]) -> torch.Tensor:
        return clip.encode_text(tokenizer(texts))

    return encode_text, None, clip.logit_scale.exp().item()
