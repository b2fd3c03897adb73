"""Shared fixtures: tiny problems built in the test, no downloads."""

from __future__ import annotations

import os

# Tests never reach the network (DESIGN.md): without this, a Hugging Face name that is not in the cache is looked up
# online, and on a machine without network each look-up waits for its retries to time out (25 s in test_hf_auto).
# Set before anything imports huggingface_hub, which reads it once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch
from torch import nn
from torch.utils.data import TensorDataset

from mooframe.problems.merging import MergingProblem


def _tiny_backbone(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8))


@pytest.fixture
def tiny_merging_problem() -> MergingProblem:
    """Two tasks on random 6-d inputs, experts = pretrained + small perturbations, linear heads."""
    pretrained = _tiny_backbone(0)
    experts = []
    for seed in (1, 2):
        expert = _tiny_backbone(0)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in expert.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=generator))
        experts.append(expert)
    generator = torch.Generator().manual_seed(3)
    heads = [nn.Linear(8, 3) for _ in range(2)]
    data = [
        TensorDataset(torch.randn(40, 6, generator=generator), torch.randint(0, 3, (40,), generator=generator))
        for _ in range(2)
    ]
    return MergingProblem(pretrained, experts, heads, data, task_names=["a", "b"], batch_size=8)


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory):
    """Point $MOOFRAME_CACHE at a session tmp dir (never the user's cache) holding one build of the digits problem."""
    from mooframe.problems.digits import MultiTaskDigits

    cache = tmp_path_factory.mktemp("mooframe-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOOFRAME_CACHE", str(cache))
        MultiTaskDigits()
        yield cache


#: The digits build recipe with two training steps per stage: the cache's logic and the code that needs some digits
#: problem run the same on it, in a second of CPU instead of the real build's half a minute.
_SMALL_RECIPE = {"pretext_steps": 2, "expert_steps": 2}


@pytest.fixture(scope="session")
def _small_digits_build(tmp_path_factory):
    from mooframe.problems import digits

    cache = tmp_path_factory.mktemp("mooframe-small-cache")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in _SMALL_RECIPE.items():
            patch.setitem(digits.RECIPE, key, value)
        digits.MultiTaskDigits(cache_dir=str(cache), progress=False)
    return cache


@pytest.fixture
def small_digits_cache(_small_digits_build, monkeypatch):
    """$MOOFRAME_CACHE at a digits build of two training steps per stage, with that recipe in force for the test:
    for tests of the cache and of code that needs some digits problem, not well-trained experts (`digits_cache`)."""
    from mooframe.problems import digits

    for key, value in _SMALL_RECIPE.items():
        monkeypatch.setitem(digits.RECIPE, key, value)
    monkeypatch.setenv("MOOFRAME_CACHE", str(_small_digits_build))
    return _small_digits_build
