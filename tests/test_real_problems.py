"""CLIP image classification and GPT-2 GLUE problems built from tiny checkpoints and data written in the test."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from mooframe.adapters import Backbone
from mooframe.models.pwe_moe import PWEMoE
from mooframe.params import is_json_serializable
from mooframe.pareto_set import FunctionalModel
from mooframe.problems.image_classification import CLIPImageClassification, image_dataset
from mooframe.problems.merging import MergingProblem
from mooframe.problems.text_classification import GLUETextClassification
from mooframe.registry import build_problem
from mooframe.result import ParetoSetResult
from mooframe.solve import solve
from tests.tiny_checkpoints import random_images, write_gpt2, write_hf_clip, write_image_folder, write_open_clip


def direct_accuracy(problem: MergingProblem, solution, task: int) -> float:
    """Accuracy of `solution` on task `task`'s test data, computed example by example."""
    data = problem.test_data[task]
    correct = 0
    with torch.no_grad():
        for i in range(len(data)):
            inputs, label = default_collate([data[i]])
            features = solution(**inputs) if isinstance(inputs, dict) else solution(inputs)
            correct += int(problem.heads[task](features).float().argmax(-1).item() == int(label))
    return correct / len(data)


def check_trains_and_evaluates(problem: MergingProblem, solver: str) -> ParetoSetResult:
    """PWE-MoE (MLP preset) trains a few steps through solve(); evaluate() matches a direct accuracy computation."""
    result = solve(problem, model="pwe_moe", solver=solver, steps=3, lr=0.05, progress=False)
    n_tasks = problem.n_objectives
    assert result.history["loss"].shape == (3, n_tasks) and np.isfinite(result.history["loss"]).all()
    trained = result.model.trainable_state()
    assert sum(t.numel() for t in trained.values()) == 2 * (4 * n_tasks**2 + 3 * n_tasks)  # 2 blocks, 1 router each
    torch.manual_seed(0)  # solve() seeds the initialization with seed 0
    initial = PWEMoE(problem).trainable_state()
    assert any(not torch.equal(trained[k], initial[k]) for k in trained)  # the routers moved
    solution = result.model_at(np.full(n_tasks, 1 / n_tasks))
    assert isinstance(solution, Backbone)  # a plain model of the base architecture, no routers left
    evaluation = problem.evaluate(solution)
    for task in range(n_tasks):
        assert evaluation.metrics["accuracy"][task] == pytest.approx(direct_accuracy(problem, solution, task))
    np.testing.assert_allclose(evaluation.objectives, 1 - evaluation.metrics["accuracy"])
    return result


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    """EuroSAT as an image folder (class names and indices), MNIST as a save_to_disk dataset."""
    import datasets

    root = tmp_path_factory.mktemp("images")
    eurosat = write_image_folder(
        root / "eurosat", {"train": {"forest": 4, "river": 4, "0": 4}, "test": {"forest": 3, "river": 3}}, seed=0
    )
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    splits = {
        split: datasets.Dataset.from_dict(
            {"image": random_images(n, seed), "label": [i % 10 for i in range(n)]}, features=features
        )
        for split, n, seed in (("train", 12, 1), ("test", 7, 2))
    }
    datasets.DatasetDict(splits).save_to_disk(root / "mnist")
    return [str(eurosat), str(root / "mnist")]


def test_hf_clip_problem_builds_trains_and_rebuilds_from_its_spec(tmp_path, image_data):
    model, experts = write_hf_clip(tmp_path, n_experts=2)
    kwargs = dict(
        tasks=["eurosat", "mnist"],
        model=model,
        experts=experts,
        data=image_data,
        head_cache=str(tmp_path / "heads"),
        batch_size=4,
    )
    problem = build_problem("clip_image_classification", **kwargs)
    assert problem.n_objectives == 2 and problem.upscale_presets["mlp"]
    assert [len(d) for d in problem.train_data] == [12, 12] and [len(d) for d in problem.test_data] == [6, 7]
    labels = sorted(int(problem.test_data[0][i][1]) for i in range(6))
    assert labels == [1, 1, 1, 8, 8, 8]  # folder names are EuroSAT class names: forest = 1, river = 8
    for state in problem.expert_states:  # experts are the pretrained tower plus small noise, not re-initialized
        assert max((state[k] - v).abs().max().item() for k, v in problem.pretrained_state().items()) < 0.5
    result = check_trains_and_evaluates(problem, "ls")
    run = result.save(tmp_path / "run")
    with pytest.raises(ValueError, match=r"config\.json key 'problem.kwargs' sets model=.*name\(s\) paths"):
        ParetoSetResult.load(run)  # the run's paths are not taken unconfirmed
    paths = {key: kwargs[key] for key in ("model", "experts", "data", "head_cache")}
    loaded = ParetoSetResult.load(run, problem_options=paths)  # rebuilds the problem from its spec, paths re-supplied
    for name, value in loaded.model_at([0.3, 0.7]).state_dict().items():
        torch.testing.assert_close(value, result.model_at([0.3, 0.7]).state_dict()[name])

    spec = problem.spec()
    assert is_json_serializable(spec["kwargs"])
    rebuilt = build_problem(spec["name"], **json.loads(json.dumps(spec["kwargs"])))
    for a, b in zip(rebuilt.expert_states, problem.expert_states, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    torch.testing.assert_close(rebuilt.heads[1].class_embeddings, problem.heads[1].class_embeddings)


def test_hf_clip_zero_shot_head_equals_the_text_towers_direct_computation(tmp_path, image_data):
    from transformers import AutoTokenizer, CLIPModel

    from mooframe.problems.image_classification import image_tasks

    model, experts = write_hf_clip(tmp_path, n_experts=1)
    problem = CLIPImageClassification(
        ["eurosat"],
        model=model,
        experts=experts,
        data=image_data[:1],
        head_cache=str(tmp_path / "heads"),
        max_train_examples=2,
        max_test_examples=2,
    )
    clip, tokenizer = CLIPModel.from_pretrained(model), AutoTokenizer.from_pretrained(model)
    task = image_tasks()["eurosat"]
    head = problem.heads[0]
    assert head.class_embeddings.shape == (10, 8)
    with torch.no_grad():
        for c, name in enumerate(task["class_names"]):
            tokens = tokenizer([t.format(name) for t in task["templates"]], padding=True, return_tensors="pt")
            text = clip.get_text_features(**tokens).pooler_output
            mean = (text / text.norm(dim=-1, keepdim=True)).mean(0)
            torch.testing.assert_close(head.class_embeddings[c], mean / mean.norm())
        images = torch.stack([problem.test_data[0][i][0] for i in range(2)])
        image = clip.get_image_features(pixel_values=images).pooler_output
        expected = clip.logit_scale.exp() * (image / image.norm(dim=-1, keepdim=True)) @ head.class_embeddings.T
        torch.testing.assert_close(problem.logits(problem.pretrained, 0, images), expected)


def test_open_clip_problem_builds_and_trains(tmp_path, image_data):
    model, experts = write_open_clip(tmp_path, n_experts=2)
    problem = CLIPImageClassification(
        ["eurosat", "mnist"],
        model=model,
        family="open_clip",
        experts=experts,
        data=image_data,
        head_cache=str(tmp_path / "heads"),
        batch_size=4,
    )
    assert problem.pretrained.family == "open_clip" and problem.heads[0].projection is None
    check_trains_and_evaluates(problem, "ls")


def test_half_precision_keeps_frozen_parts_in_bfloat16(tmp_path, image_data):
    model, experts = write_hf_clip(tmp_path, n_experts=1)
    kwargs = dict(
        model=model, experts=experts, data=image_data[:1], head_cache=str(tmp_path / "heads"), max_test_examples=4
    )
    full = CLIPImageClassification(["eurosat"], **kwargs)
    half = CLIPImageClassification(["eurosat"], precision="bfloat16", **kwargs)
    assert all(v.dtype == torch.bfloat16 for v in half.expert_states[0].values())
    assert next(half.pretrained.parameters()).dtype == torch.bfloat16
    images = torch.stack([full.test_data[0][i][0] for i in range(4)])
    logits = half.logits(half.pretrained, 0, images)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, full.logits(full.pretrained, 0, images), atol=0.5, rtol=0.05)
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        CLIPImageClassification(["eurosat"], precision="fp8", **kwargs)


@pytest.fixture(scope="module")
def glue_data(tmp_path_factory):
    """MNLI (3 labels, matched validation split) and SST-2 (2 labels) written with save_to_disk."""
    import datasets

    root = tmp_path_factory.mktemp("glue")
    rng = np.random.default_rng(0)
    words = "a photo of the this is good bad movie yes no it he she".split()

    def sentences(n):
        return [" ".join(rng.choice(words, size=rng.integers(1, 6))) for _ in range(n)]

    mnli = {
        split: datasets.Dataset.from_dict(
            {"premise": sentences(n), "hypothesis": sentences(n), "label": [i % 3 for i in range(n)]}
        )
        for split, n in (("train", 10), ("validation_matched", 6))
    }
    sst2 = {
        split: datasets.Dataset.from_dict({"sentence": sentences(n), "label": [i % 2 for i in range(n)]})
        for split, n in (("train", 10), ("validation", 5))
    }
    datasets.DatasetDict(mnli).save_to_disk(root / "mnli")
    datasets.DatasetDict(sst2).save_to_disk(root / "sst2")
    return [str(root / "mnli"), str(root / "sst2")]


def test_gpt2_glue_problem_builds_trains_and_scores_with_each_experts_head(tmp_path, glue_data):
    from transformers import GPT2ForSequenceClassification, GPT2Model

    from mooframe.adapters.gpt2 import GPT2Backbone
    from mooframe.export import export_solution

    model, experts = write_gpt2(tmp_path, num_labels=[3, 2])
    problem = build_problem(
        "gpt2_glue", tasks=["mnli", "sst2"], model=model, experts=experts, data=glue_data, max_length=12, batch_size=4
    )
    assert [len(d) for d in problem.test_data] == [6, 5]
    assert [h.out_features for h in problem.heads] == [3, 2]
    inputs, _ = default_collate([problem.test_data[1][i] for i in range(5)])
    with torch.no_grad():
        expert_logits = GPT2ForSequenceClassification.from_pretrained(experts[1])(**inputs).logits
        merged_at_expert = FunctionalModel(problem.pretrained, problem.expert_states[1])
        torch.testing.assert_close(problem.logits(merged_at_expert, 1, inputs), expert_logits)
    assert is_json_serializable(problem.spec()["kwargs"])
    solution = check_trains_and_evaluates(problem, "epo").model_at([0.5, 0.5])

    exported = export_solution(solution, tmp_path / "export", card={})  # a plain GPT-2 checkpoint
    reloaded = GPT2Backbone(GPT2Model.from_pretrained(exported))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs), solution(**inputs))


def test_missing_data_names_the_path_or_hub_id(tmp_path, image_data, monkeypatch):
    import datasets

    from mooframe.problems.image_classification import clip_transform

    missing = tmp_path / "no_such_dataset"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        image_dataset("dtd", str(missing), "train", clip_transform(32))
    with pytest.raises(FileNotFoundError, match=re.escape(f"{image_data[0]}/validation")):
        image_dataset("eurosat", image_data[0], "validation", clip_transform(32))
    datasets.Dataset.from_dict({"image": random_images(2, 0), "label": [0, 1]}).save_to_disk(tmp_path / "one")
    with pytest.raises(ValueError, match="holds a single split; save a DatasetDict with a 'train' split"):
        image_dataset("dtd", str(tmp_path / "one"), "train", clip_transform(32))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match=r"'tanganke/dtd' split 'train'.*load_dataset\('tanganke/dtd'\)"):
        image_dataset("dtd", None, "train", clip_transform(32))
    with pytest.raises(ValueError, match="unknown image tasks \\['cifar10'\\]"):
        CLIPImageClassification(["cifar10"])
    with pytest.raises(ValueError, match="unknown model family 'timm'"):
        CLIPImageClassification(["dtd"], family="timm")
    with pytest.raises(ValueError, match="unknown GLUE tasks \\['wnli'\\]"):
        GLUETextClassification(["wnli"])
