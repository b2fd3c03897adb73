"""Caches keyed by content (zero-shot heads), the decoded-image cache, and quiet loading of CLIP vision towers."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import CLIPModel

from mooframe.adapters import hf_clip
from mooframe.adapters.zero_shot import cached_zero_shot_head
from mooframe.problems.image_classification import CLIPImageClassification
from tests.tiny_checkpoints import perturbed, write_hf_clip, write_image_folder


@pytest.fixture(scope="module")
def eurosat(tmp_path_factory):
    root = tmp_path_factory.mktemp("eurosat")
    return str(write_image_folder(root, {"train": {"forest": 3, "river": 3}, "test": {"forest": 2, "river": 2}}, 0))


def test_head_cache_is_rebuilt_when_the_checkpoint_changes_under_the_same_id(tmp_path, eurosat):
    model, experts = write_hf_clip(tmp_path, n_experts=1)
    options = dict(tasks=["eurosat"], model=model, experts=experts, data=[eurosat], head_cache=str(tmp_path / "heads"))
    first = CLIPImageClassification(**options).heads[0].class_embeddings
    clip = CLIPModel.from_pretrained(model)
    perturbed(clip.text_model, seed=7, scale=0.5)  # another model saved under the same path (the same id)
    clip.save_pretrained(model)
    second = CLIPImageClassification(**options).heads[0].class_embeddings
    fresh = CLIPImageClassification(**{**options, "head_cache": str(tmp_path / "empty")}).heads[0].class_embeddings
    assert (first - second).abs().max() > 1e-3  # not the stale heads
    torch.testing.assert_close(second, fresh, rtol=0, atol=0)


def test_text_fingerprint_follows_the_text_tower_only(tmp_path):
    model, _ = write_hf_clip(tmp_path, n_experts=0)
    before = hf_clip.text_fingerprint(model)
    clip = CLIPModel.from_pretrained(model)
    perturbed(clip.vision_model, seed=3)  # heads do not depend on the vision tower
    clip.save_pretrained(model)
    assert hf_clip.text_fingerprint(model) == before
    with torch.no_grad():
        clip.logit_scale.add_(0.1)
    clip.save_pretrained(model)
    assert hf_clip.text_fingerprint(model) != before
    with pytest.raises(FileNotFoundError, match="not a local folder and not in the Hugging Face cache"):
        hf_clip.text_fingerprint("nobody/no-such-clip")


def test_head_cache_content_key(tmp_path):
    calls = []

    def tower():
        calls.append(1)
        return (lambda texts: torch.ones(len(texts), 3) + torch.arange(len(texts))[:, None]), None, 50.0

    for content in ("a", "a", "b"):
        cached_zero_shot_head("org/model", "task", ["x", "y"], ["{}"], tower, tmp_path, content=content)
    assert len(calls) == 2


def test_vision_tower_of_a_full_clip_checkpoint_loads_exactly_and_quietly(tmp_path, capfd, caplog):
    model, _ = write_hf_clip(tmp_path, n_experts=0)
    capfd.readouterr()
    with caplog.at_level(logging.INFO):
        backbone = hf_clip.load_backbone(model)
    printed = capfd.readouterr()
    report = printed.out + printed.err + caplog.text
    assert "UNEXPECTED" not in report and "text_model" not in report
    reference = CLIPModel.from_pretrained(model).vision_model.state_dict()
    loaded = {k.removeprefix("vision_model."): v for k, v in backbone.model.state_dict().items()}
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)
    assert hf_clip.CLIPVisionModel._keys_to_ignore_on_load_unexpected is None  # the class is left as it was


def test_repeated_dataset_loader_warnings_appear_once(caplog):
    from mooframe.problems.pretrained import load_hf_dataset

    with pytest.raises(FileNotFoundError):
        load_hf_dataset(None, "nobody/no-such-dataset", "train")
    loader_log = logging.getLogger("datasets.load")
    with caplog.at_level(logging.WARNING, logger="datasets.load"):
        for split in ("train", "test", "train"):
            loader_log.warning("Using the latest cached version of the dataset since tanganke/dtd couldn't be found")
            loader_log.warning(f"split {split}")
    messages = [record.getMessage() for record in caplog.records]
    assert messages.count("Using the latest cached version of the dataset since tanganke/dtd couldn't be found") == 1
    assert messages.count("split train") == 1 and messages.count("split test") == 1
