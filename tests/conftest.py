"""Shared fixtures: tiny problems built in the test, no downloads."""

from __future__ import annotations

import pytest
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
