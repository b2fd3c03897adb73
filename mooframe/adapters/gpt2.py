"""GPT-2 sequence classifiers (`transformers.GPT2ForSequenceClassification`), one expert per GLUE task.

Experts follow the FusionBench naming `tanganke/gpt2_<task>`; each keeps its own classification head (`score`).
"""

from __future__ import annotations

import torch
from torch import nn

from mooframe.adapters.hf_auto import PooledBackbone
from mooframe.adapters.hub import from_pretrained_offline
from mooframe.optional import requires

with requires("text"):
    from transformers import AutoTokenizer, GPT2ForSequenceClassification, GPT2Model, PreTrainedTokenizerBase

#: Module-name patterns (regular expressions, matched in full) of the PWE-MoE up-scaling presets.
UPSCALE_PRESETS: dict[str, list[str]] = {
    "mlp": [r"model\.h\.\d+\.mlp"],
    "attention_mlp": [r"model\.h\.\d+\.mlp", r"model\.h\.\d+\.attn"],
}


class GPT2Backbone(PooledBackbone):
    """(input_ids, attention_mask) -> hidden state of each sequence's last non-padding token (`hf_auto`'s
    "last_token" pooling).

    That is the token GPT2ForSequenceClassification classifies, so `expert.score(backbone(...))` equals the
    expert's own logits.
    """

    family = "hf_gpt2"

    def __init__(self, model: GPT2Model) -> None:
        super().__init__(model, "last_token")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return super().forward(input_ids=input_ids, attention_mask=attention_mask)


def expert_source(task: str) -> str:
    """The FusionBench hub id of `task`'s GPT-2 expert: tanganke/gpt2_<task>."""
    return f"tanganke/gpt2_{task}"


def load_backbone(source: str) -> GPT2Backbone:
    """The pretrained GPT-2 body at `source` (a save_pretrained folder, or a hub id such as "gpt2" in the cache)."""
    return GPT2Backbone(from_pretrained_offline(GPT2Model, source, "pretrained GPT-2"))


def load_expert(source: str) -> tuple[GPT2Backbone, nn.Linear]:
    """A fine-tuned GPT2ForSequenceClassification at `source`, split into its body and its `score` head."""
    classifier = from_pretrained_offline(GPT2ForSequenceClassification, source, "GPT-2 expert")
    return GPT2Backbone(classifier.transformer), classifier.score


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """The tokenizer saved with `source`; GPT-2 has no padding token, so padding reuses end-of-text (as HF does)."""
    tokenizer = from_pretrained_offline(AutoTokenizer, source, "GPT-2 tokenizer")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
