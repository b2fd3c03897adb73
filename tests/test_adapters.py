"""Adapters: up-scaling presets on the real architectures, zero-shot heads, checkpoint loading and its errors."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from mooframe.adapters import gpt2, hf_clip
from mooframe.adapters import open_clip as open_clip_adapter
from mooframe.adapters.zero_shot import ZeroShotHead, cached_zero_shot_head, class_embeddings
from tests.tiny_checkpoints import write_gpt2, write_open_clip
from tests.toys import meta_hf_clip_vision


def router_parameters(backbone: torch.nn.Module, patterns: list[str], n_tasks: int) -> int:
    """PWE-MoE's trainable parameters: one router of 4T^2 + 3T parameters per module matched in full."""
    matched = [name for name, _ in backbone.named_modules() if any(re.fullmatch(p, name) for p in patterns)]
    return len(matched) * (4 * n_tasks**2 + 3 * n_tasks)


@pytest.mark.parametrize(
    ("layers", "width", "patch", "expected"),
    [(12, 768, 32, {2: 264, 3: 540, 8: 3360}), (24, 1024, 14, {2: 528, 8: 6720})],
    ids=["ViT-B-32", "ViT-L-14"],
)
def test_presets_give_the_papers_router_counts_on_real_architectures(layers, width, patch, expected):
    backbone = meta_hf_clip_vision(layers, width, patch)
    for n_tasks, count in expected.items():
        assert router_parameters(backbone, hf_clip.UPSCALE_PRESETS["mlp"], n_tasks) == count
    assert router_parameters(backbone, hf_clip.UPSCALE_PRESETS["attention_mlp"], 2) == 2 * expected[2]


@pytest.mark.parametrize(("name", "expected"), [("ViT-B-32", 264), ("ViT-B-16", 264), ("ViT-L-14", 528)])
def test_open_clip_presets_match_every_block(name, expected):
    import open_clip

    with torch.device("meta"):
        visual = open_clip.create_model(name, device="meta").visual
    backbone = open_clip_adapter.OpenCLIPVisionBackbone(visual)
    assert router_parameters(backbone, open_clip_adapter.UPSCALE_PRESETS["mlp"], 2) == expected
    assert router_parameters(backbone, open_clip_adapter.UPSCALE_PRESETS["attention_mlp"], 2) == 2 * expected


def test_gpt2_presets_match_every_block():
    from transformers import GPT2Config, GPT2Model

    with torch.device("meta"):
        backbone = gpt2.GPT2Backbone(GPT2Model(GPT2Config()))  # the 12-layer GPT-2 of the paper
    assert router_parameters(backbone, gpt2.UPSCALE_PRESETS["mlp"], 7) == 12 * (4 * 49 + 21)
    assert router_parameters(backbone, gpt2.UPSCALE_PRESETS["attention_mlp"], 7) == 24 * (4 * 49 + 21)


def test_zero_shot_head_rows_are_normalized_mean_template_embeddings(tmp_path):
    generator = torch.Generator().manual_seed(0)
    table = {}

    def encode_text(texts):
        return torch.stack([table.setdefault(t, torch.randn(6, generator=generator)) for t in texts])

    names, templates = ["cat", "dog", "car"], ["a photo of a {}.", "a {} here", "my {}!"]
    embeddings = class_embeddings(encode_text, names, templates, batch_size=4)
    for c, name in enumerate(names):
        direct = torch.stack([F.normalize(table[t.format(name)], dim=0) for t in templates]).mean(0)
        torch.testing.assert_close(embeddings[c], direct / direct.norm())
    projection = torch.randn(6, 5, generator=generator)
    head = ZeroShotHead(embeddings, logit_scale=100.0, projection=projection)
    features = torch.randn(4, 5, generator=generator)
    expected = 100.0 * F.normalize(features @ projection.T, dim=-1) @ embeddings.T
    torch.testing.assert_close(head(features), expected)


def test_zero_shot_heads_are_cached_by_model_and_task(tmp_path):
    calls = []

    def tower():
        calls.append(1)
        return (lambda texts: torch.ones(len(texts), 3) + torch.arange(len(texts))[:, None]), None, 50.0

    first = cached_zero_shot_head("org/model", "task", ["x", "y"], ["{}"], tower, tmp_path)
    again = cached_zero_shot_head("org/model", "task", ["x", "y"], ["{}"], tower, tmp_path)
    assert len(calls) == 1
    torch.testing.assert_close(again.class_embeddings, first.class_embeddings)
    assert again.logit_scale.item() == 50.0 and again.projection is None
    cached_zero_shot_head("org/model", "task", ["x", "y"], ["a {}"], tower, tmp_path)  # new templates: rebuilt
    cached_zero_shot_head("org/other", "task", ["x", "y"], ["{}"], tower, tmp_path)  # other model: own file
    assert len(calls) == 3


def test_hf_clip_text_tower_builds_the_zero_shot_head_directly(tmp_path):
    from transformers import AutoTokenizer, CLIPModel

    from tests.tiny_checkpoints import write_hf_clip

    model, _ = write_hf_clip(tmp_path, n_experts=0)
    encode_text, projection, scale = hf_clip.text_tower(model)
    clip, tokenizer = CLIPModel.from_pretrained(model), AutoTokenizer.from_pretrained(model)
    texts = ["a photo of a forest.", "a photo of the river."]
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        direct = clip.text_projection(clip.text_model(**tokens).pooler_output)
        torch.testing.assert_close(encode_text(texts), direct)
    torch.testing.assert_close(projection, clip.visual_projection.weight)
    assert scale == pytest.approx(clip.logit_scale.exp().item())


def test_open_clip_experts_load_in_both_key_formats(tmp_path):
    model, experts = write_open_clip(tmp_path, n_experts=2)
    backbone = open_clip_adapter.load_backbone(model)
    names = {name for name, _ in backbone.named_parameters()}
    for path in experts:
        state = open_clip_adapter.load_expert_state(path)
        assert names <= set(state)
        assert not torch.equal(state["model.conv1.weight"], backbone.model.conv1.weight)
    pickled = tmp_path / "pickled.pt"
    torch.save(backbone, pickled)
    with pytest.raises(ValueError, match="pickled module, not a state dict"):
        open_clip_adapter.load_expert_state(pickled)


def test_gpt2_backbone_and_score_reproduce_the_expert_logits(tmp_path):
    from transformers import GPT2ForSequenceClassification

    model, experts = write_gpt2(tmp_path, num_labels=[3])
    tokenizer = gpt2.load_tokenizer(model)
    tokens = tokenizer(["this is good", "no", "he is a bad movie yes"], padding=True, return_tensors="pt")
    body, score = gpt2.load_expert(experts[0])
    with torch.no_grad():
        expected = GPT2ForSequenceClassification.from_pretrained(experts[0])(**tokens).logits
        torch.testing.assert_close(score(body(**tokens)), expected)


def test_missing_checkpoints_name_the_path_or_hub_id(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        hf_clip.load_backbone(str(missing))
    hub_id = hf_clip.expert_source("openai/clip-vit-base-patch32", "sun397")
    assert hub_id == "tanganke/clip-vit-base-patch32_sun397"
    with pytest.raises(FileNotFoundError, match=r"'tanganke/clip-vit-base-patch32_sun397'.*hf download"):
        hf_clip.load_backbone(hub_id)
    with pytest.raises(FileNotFoundError, match=r"'tanganke/gpt2_cola'.*hf download"):
        gpt2.load_expert(gpt2.expert_source("cola"))
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing / "e.pt"))):
        open_clip_adapter.load_expert_state(missing / "e.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_clip_adapter.load_backbone(f"local-dir:{missing}")
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing / "w.pt"))):
        open_clip_adapter.load_backbone("ViT-B-32", str(missing / "w.pt"))
    with pytest.raises(ValueError, match="unknown open_clip architecture 'ViT-X'"):
        open_clip_adapter.load_backbone("ViT-X")
