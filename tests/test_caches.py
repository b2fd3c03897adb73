"""Caches keyed by content (zero-shot heads), the decoded-image cache, and quiet loading of CLIP vision towers."""

from __future__ import annotations

import logging

import pytest
import torch
from torch.utils.data import Dataset
from transformers import CLIPModel

from mooframe import data as pipeline
from mooframe.adapters import hf_clip
from mooframe.adapters.zero_shot import cached_zero_shot_head
from mooframe.params import get_params
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


def test_repeated_dataset_loader_warnings_appear_once(caplog, tmp_path):
    import datasets

    from mooframe.problems.pretrained import load_hf_dataset

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"label": [0, 1]})}).save_to_disk(tmp_path / "d")
    assert load_hf_dataset(str(tmp_path / "d"), "org/d", "train")["label"] == [0, 1]
    loader_log = logging.getLogger("datasets.load")
    with caplog.at_level(logging.WARNING, logger="datasets.load"):
        for split in ("train", "test", "train"):
            loader_log.warning("Using the latest cached version of the dataset since tanganke/dtd couldn't be found")
            loader_log.warning(f"split {split}")
    messages = [record.getMessage() for record in caplog.records]
    assert messages.count("Using the latest cached version of the dataset since tanganke/dtd couldn't be found") == 1
    assert messages.count("split train") == 1 and messages.count("split test") == 1


class _Counting(Dataset):
    def __init__(self, data):
        self.data, self.reads = data, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        self.reads += 1
        return self.data[index]


def test_decoded_cache_serves_the_same_tensors_and_is_rebuilt_when_corrupt(tmp_path, eurosat):
    from mooframe.problems.image_classification import clip_decode, clip_transform, image_dataset, normalize_pixels

    source = _Counting(image_dataset("eurosat", eurosat, "train", clip_decode(32)))
    key = {"task": "eurosat", "revision": source.data.revision, "transform": repr(clip_decode(32))}
    cached = pipeline.decoded_cache(source, key, normalize_pixels, root=tmp_path, workers=0, batch_size=4)
    assert source.reads == 6
    on_the_fly = image_dataset("eurosat", eurosat, "train", clip_transform(32))
    for i in range(6):
        assert torch.equal(cached[i][0], on_the_fly[i][0]) and cached[i][1] == on_the_fly[i][1]
    inputs, labels = pipeline.take(cached, torch.tensor([4, 1]))
    assert torch.equal(inputs, torch.stack([on_the_fly[4][0], on_the_fly[1][0]])) and labels.tolist() == [8, 1]
    assert pipeline.is_in_memory(cached)

    expected = cached.batch(torch.arange(6))[0].clone()
    again = pipeline.decoded_cache(source, key, normalize_pixels, root=tmp_path)
    assert source.reads == 6 and torch.equal(again.batch(torch.arange(6))[0], expected)
    (folder,) = (tmp_path / "decoded").iterdir()
    corruptions = {
        "pixels.npy": lambda b: b[:-5] + bytes(5 - i for i in range(5)),  # overwritten bytes
        "labels.npy": lambda b: b[: len(b) // 2],  # truncated
        "meta.json": lambda b: b"{not json",
    }
    for name, corrupt in corruptions.items():
        reads = source.reads
        path = folder / name
        path.write_bytes(corrupt(path.read_bytes()))
        rebuilt = pipeline.decoded_cache(source, key, normalize_pixels, root=tmp_path, workers=0)
        assert source.reads == reads + 6, name  # decoded again
        assert torch.equal(rebuilt.batch(torch.arange(6))[0], expected), name
    pipeline.decoded_cache(source, {**key, "transform": "other"}, normalize_pixels, root=tmp_path)
    assert len(list((tmp_path / "decoded").iterdir())) == 2  # another key is another entry


def test_problem_with_the_decoded_cache_equals_the_problem_without(tmp_path, eurosat, monkeypatch):
    monkeypatch.setenv("MOOFRAME_CACHE", str(tmp_path / "cache"))
    model, experts = write_hf_clip(tmp_path, n_experts=1)
    options = dict(tasks=["eurosat"], model=model, experts=experts, data=[eurosat], head_cache=str(tmp_path / "h"))
    plain = CLIPImageClassification(**options)
    cached = CLIPImageClassification(**options, decoded_cache=True, max_test_examples=3)
    assert get_params(cached)["decoded_cache"] is True
    assert "decoded_cache" not in cached.spec()["kwargs"]  # how it loads, not what it computes: not in a saved run
    assert [len(d) for d in cached.test_data] == [3] and len(list((tmp_path / "cache" / "decoded").iterdir())) == 2
    for mine, theirs in ((cached.train_data[0], plain.train_data[0]), (cached.test_data[0], plain.test_data[0])):
        for i in range(len(mine)):
            assert torch.equal(mine[i][0], theirs[i][0]) and mine[i][1] == theirs[i][1]


def test_clip_transform_equals_torchvisions_reference_pipeline():
    from PIL import Image
    from torchvision import transforms

    from mooframe.problems.image_classification import CLIP_MEAN, CLIP_STD, clip_transform

    reference = transforms.Compose(
        [
            transforms.Resize(32, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(32),
            transforms.Lambda(lambda image: image.convert("RGB")),
            transforms.ToTensor(),
            transforms.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )
    image = Image.fromarray(torch.randint(0, 256, (50, 70), dtype=torch.uint8).numpy())  # grey: converted to RGB
    assert torch.equal(clip_transform(32)(image), reference(image))
