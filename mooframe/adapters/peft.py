"""PEFT LoRA adapters on one base model as exact low-rank experts: theta_t = theta_0 + scale_t B_t A_t per layer.

Each adapter of a `peft.PeftModel` becomes a `LowRankExpert` of the base model (the scale folded into B), which
`MergingProblem` accepts as an expert and the merging models hold exactly in factored form
(`task_vector_rank=1.0`); no dense task vector is formed unless something reads the expert's weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from mooframe.merging.store import LowRankExpert
from mooframe.optional import requires


def lora_experts(
    peft_model: nn.Module, adapters: Sequence[str] | None = None, prefix: str = ""
) -> tuple[nn.Module, list[LowRankExpert]]:
    """The base model with every LoRA layer removed (its original weights), and one expert per adapter.

    `adapters` are adapter names of `peft_model` (default: all, in the order they were added); `prefix` is put
    before each parameter name, for a backbone that wraps the base model (e.g. "model." for an adapter's wrapper).
    Only plain LoRA on linear layers is exactly low rank: DoRA, and LoRA on embeddings or convolutions, are refused.
    """
    with requires("text"):
        from peft import PeftModel
        from peft.tuners.lora import Linear as LoraLinear
        from peft.tuners.lora import LoraLayer

    if not isinstance(peft_model, PeftModel):
        raise ValueError(f"pass a peft.PeftModel holding LoRA adapters, got {type(peft_model).__name__}")
    names = list(peft_model.peft_config) if adapters is None else list(adapters)
    unknown = [name for name in names if name not in peft_model.peft_config]
    if unknown or not names:
        raise ValueError(f"unknown adapters {unknown}; this model has {list(peft_model.peft_config)}")
    factors: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = [{} for _ in names]
    for module_name, module in peft_model.get_base_model().named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if not isinstance(module, LoraLinear):
            raise ValueError(f"{module_name} is a {type(module).__name__}: only LoRA on linear layers is supported")
        weight_name = f"{prefix}{module_name}.weight"
        for t, adapter in enumerate(names):
            if adapter not in module.lora_A:
                continue
            if module.use_dora.get(adapter, False):
                raise ValueError(f"adapter {adapter!r} uses DoRA, which is not a low-rank delta; merge it first")
            b = module.lora_B[adapter].weight.detach() * module.scaling[adapter]
            a = module.lora_A[adapter].weight.detach()
            factors[t][weight_name] = (a.T.clone(), b.T.clone()) if module.fan_in_fan_out else (b.clone(), a.clone())
    if not any(factors):
        raise ValueError("the model holds no LoRA layer for these adapters")
    return peft_model.unload(), [LowRankExpert(f) for f in factors]


def load_lora_experts(
    base: nn.Module, adapter_dirs: Sequence[str | Path], prefix: str = ""
) -> tuple[nn.Module, list[LowRankExpert]]:
    """`lora_experts` of the adapters saved (PEFT's `save_pretrained`) in `adapter_dirs`, loaded onto `base`.

    PEFT loads adapters into `base` in place; the returned base model is `base` with its LoRA layers removed.
    """
    with requires("text"):
        from peft import PeftModel

    if not adapter_dirs:
        raise ValueError("pass at least one LoRA adapter folder")
    for folder in adapter_dirs:
        if not (Path(folder) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{folder} holds no adapter_config.json; pass folders written by save_pretrained")
    names = [f"task{t}" for t in range(len(adapter_dirs))]
    model = PeftModel.from_pretrained(base, str(adapter_dirs[0]), adapter_name=names[0])
    for name, folder in zip(names[1:], adapter_dirs[1:], strict=True):
        model.load_adapter(str(folder), adapter_name=name)
    return lora_experts(model, names, prefix)
