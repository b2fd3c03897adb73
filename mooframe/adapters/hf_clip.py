"""Hugging Face CLIP vision towers (`transformers.CLIPVisionModel`), e.g. openai/clip-vit-base-patch32."""

from __future__ import annotations

import torch
from transformers import CLIPVisionModel

from mooframe.adapters import Backbone

#: Module-name patterns (regular expressions, matched in full) of the PWE-MoE up-scaling presets.
#: transformers 5 dropped the `vision_model` level of CLIPVisionModel; 4.x still has it.
UPSCALE_PRESETS: dict[str, list[str]] = {
    "mlp": [r"model\.(?:vision_model\.)?encoder\.layers\.\d+\.mlp"],
    "attention_mlp": [
        r"model\.(?:vision_model\.)?encoder\.layers\.\d+\.mlp",
        r"model\.(?:vision_model\.)?encoder\.layers\.\d+\.self_attn",
    ],
}


class HFCLIPVisionBackbone(Backbone):
    """pixel_values -> pooled image features (the tower's pooler output, before the visual projection)."""

    family = "hf_clip"

    def __init__(self, model: CLIPVisionModel) -> None:
        super().__init__(model)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).pooler_output
