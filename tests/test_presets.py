"""The paper's "(All)" up-scaling preset on the real CLIP layouts (meta device): routed modules and router counts.

Table 8 prints 1.43K / 18.20K router parameters at T = 2 / 8 for ViT-B/32 "(All)": 65 routers of 4T^2 + 3T. The
authors' list routes 65 modules of the task-vectors ImageEncoder; 14 of them change nothing an image passes
through (12 parameterless `ln_attn` and the text tower's token_embedding and ln_final), so an image encoder has 51.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mooframe.adapters import hf_clip
from mooframe.adapters import open_clip as open_clip_adapter
from mooframe.models.pwe_moe import PWEMoE
from mooframe.problems.merging import MergingProblem
from tests.toys import meta_hf_clip_vision

# (layers, width, patch) of the paper's two CLIP models
LAYOUTS = {"ViT-B-32": (12, 768, 32), "ViT-L-14": (24, 1024, 14)}


def open_clip_visual(name: str) -> nn.Module:
    import open_clip

    with torch.device("meta"):
        return open_clip_adapter.OpenCLIPVisionBackbone(open_clip.CLIP(**open_clip.get_model_config(name)).visual)


def hf_clip_vision(name: str) -> nn.Module:
    return meta_hf_clip_vision(*LAYOUTS[name])


def pwe_moe_on(backbone: nn.Module, presets: dict, n_tasks: int, upscale: str = "all") -> PWEMoE:
    """PWE-MoE with the preset `upscale` over `n_tasks` copies of a meta-device backbone (routers: real tensors)."""
    problem = MergingProblem(
        backbone,
        [backbone] * n_tasks,
        [nn.Identity()] * n_tasks,
        [torch.utils.data.TensorDataset(torch.zeros(1))] * n_tasks,
        upscale_presets=presets,
    )
    return PWEMoE(problem, upscale=upscale)


def router_count(model: PWEMoE) -> int:
    return sum(p.numel() for p in model.trainable_parameters())


@pytest.mark.parametrize(("name", "blocks"), [("ViT-B-32", 12), ("ViT-L-14", 24)])
@pytest.mark.parametrize("family", ["open_clip", "hf_clip"])
def test_all_preset_routes_the_stem_head_and_every_blocks_norms_attention_and_mlp(family, name, blocks):
    backbone = open_clip_visual(name) if family == "open_clip" else hf_clip_vision(name)
    presets = open_clip_adapter.UPSCALE_PRESETS if family == "open_clip" else hf_clip.UPSCALE_PRESETS
    counts = {n_tasks: router_count(pwe_moe_on(backbone, presets, n_tasks)) for n_tasks in (2, 8)}
    modules = 3 + 4 * blocks  # conv1, ln_pre, ln_post; ln_1, attn, ln_2, mlp per block
    assert counts == {2: modules * 22, 8: modules * 280}
    model = pwe_moe_on(backbone, presets, 2)
    assert len(model.module_names) == modules
    # every parameter of the image encoder is routed except the class and position embeddings and the projection
    routed = set(model.groups)
    left = {name for name, _ in backbone.named_parameters()} - routed
    expected_left = (
        {"model.class_embedding", "model.positional_embedding", "model.proj"}
        if family == "open_clip"
        else {"model.embeddings.class_embedding", "model.embeddings.position_embedding.weight"}
    )
    assert left == expected_left


def test_all_preset_reconciles_with_table_8():
    """ViT-B/32: 51 routers here + the 14 of the authors' list that no image reaches = 65 = 1.43K / 22 = 18.2K / 280."""
    model = pwe_moe_on(open_clip_visual("ViT-B-32"), open_clip_adapter.UPSCALE_PRESETS, 2)
    unreachable = 12 + 2  # ln_attn per block (parameterless), token_embedding and ln_final (text tower)
    assert round((router_count(model) + unreachable * 22) / 1000, 2) == 1.43
    model8 = pwe_moe_on(open_clip_visual("ViT-B-32"), open_clip_adapter.UPSCALE_PRESETS, 8)
    assert round((router_count(model8) + unreachable * 280) / 1000, 2) == 18.20
    # the open_clip blocks hold no ln_attn parameters: the pattern names it, nothing is selected
    assert not any(name.endswith("ln_attn") for name in model.module_names)


def test_attention_mlp_stays_mooframes_own_24_modules():
    model = pwe_moe_on(open_clip_visual("ViT-B-32"), open_clip_adapter.UPSCALE_PRESETS, 2, upscale="attention_mlp")
    assert len(model.module_names) == 24 and router_count(model) == 528
