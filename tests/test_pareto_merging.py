"""Pareto Merging: the low-rank preference tensor, base merges, unload invariance, parameter count, objectives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from mooframe import ParetoSetResult, solve
from mooframe.indicators import hypervolume
from mooframe.models.pareto_merging import LowRankPreferenceTensor, ParetoMerging
from mooframe.pareto_set import FunctionalModel
from mooframe.problems.merging import MergingProblem
from mooframe.registry import registered


def _randomize(model: ParetoMerging, seed: int = 0) -> None:
    """Give every core a non-zero value, so that the preference-dependent part is not zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.tensors:
            tensor.core.copy_(0.1 * torch.randn(tensor.core.shape, generator=generator))


def test_low_rank_tensor_equals_the_full_tucker_product():
    torch.manual_seed(0)
    tensor = LowRankPreferenceTensor((7, 5), n_objectives=3, rank=4, pref_rank=2)
    with torch.no_grad():
        tensor.core.normal_()
        tensor.pref.normal_()
    pref = torch.tensor([0.2, 0.5, 0.3])
    expected = torch.einsum("pqs,mp,nq,ts,t->mn", tensor.core, tensor.rows, tensor.cols, tensor.pref, pref)
    torch.testing.assert_close(tensor(pref), expected)
    other = torch.tensor([1.0, 0.0, 0.0])
    torch.testing.assert_close(tensor(0.4 * pref + 0.6 * other), 0.4 * tensor(pref) + 0.6 * tensor(other))
    assert sum(p.numel() for p in tensor.parameters()) == 4 * 4 * 2 + 7 * 4 + 5 * 4 + 3 * 2


def test_at_initialization_every_preference_gives_the_base_merge(tiny_merging_problem):
    problem = tiny_merging_problem
    model = ParetoMerging(problem, base="task_arithmetic", scaling=0.4, rank=3)
    theta0 = problem.pretrained_state()
    for pref in ([1.0, 0.0], [0.3, 0.7]):
        params = model(torch.tensor(pref)).params
        for name, value in theta0.items():
            expected = value + 0.4 * sum(s[name] - value for s in problem.expert_states)
            torch.testing.assert_close(params[name], expected)


def test_unload_invariance_and_a_plain_materialized_module(tiny_merging_problem):
    problem = tiny_merging_problem
    for base in ("ties", "adamerging"):
        model = ParetoMerging(problem, base=base, rank=3)
        _randomize(model)
        pref = torch.tensor([0.25, 0.75])
        structured = model(pref)
        plain = model.materialize(pref)
        assert type(plain) is type(problem.pretrained) and plain is not problem.pretrained
        assert not any("tensors" in name for name, _ in plain.named_parameters())
        inputs = problem.test_data[0].tensors[0]
        torch.testing.assert_close(plain(inputs), structured(inputs), atol=1e-5, rtol=0)
        delta = structured.params["2.weight"] - model.base_parameters()["2.weight"]
        assert delta.abs().max() > 1e-3  # the preference-dependent part is really there


def test_unload_invariance_on_a_tiny_clip_vision_tower():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from mooframe.adapters.hf_clip import HFCLIPVisionBackbone

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2,
    )  # fmt: skip
    backbone = HFCLIPVisionBackbone(CLIPVisionModel(config))
    experts = [{n: p + 0.05 * torch.randn_like(p) for n, p in backbone.named_parameters()} for _ in range(3)]
    images = torch.randn(5, 1, 8, 8)
    data = [TensorDataset(images, torch.zeros(5, dtype=torch.long))] * 3
    problem = MergingProblem(backbone, experts, [nn.Linear(16, 2) for _ in range(3)], data)
    model = ParetoMerging(problem, base="adamerging", rank=4)
    assert len(model.adapted) == 2 * 6  # q, k, v, out, fc1, fc2 per block
    _randomize(model)
    pref = torch.tensor([0.2, 0.3, 0.5])
    plain = model.materialize(pref)
    assert type(plain) is HFCLIPVisionBackbone and type(plain.model) is CLIPVisionModel
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in backbone.parameters())
    torch.testing.assert_close(plain(images), model(pref)(images), atol=1e-5, rtol=0)


def test_only_the_low_rank_tensors_and_adamerging_coefficients_train(tiny_merging_problem):
    problem = tiny_merging_problem
    model = ParetoMerging(problem, base="task_arithmetic", rank=3, layers=[r"2"])
    assert model.adapted == ["2.weight"]
    assert {id(p) for p in model.trainable_parameters()} == {id(p) for p in model.tensors.parameters()}
    ada = ParetoMerging(problem, base="adamerging", rank=3)
    assert ada.adapted == ["0.weight", "2.weight"]
    n_tensors = len(list(problem.pretrained.parameters()))
    assert ada.coefficients.shape == (n_tensors, 2) and ada.coefficients.requires_grad
    baseline = ParetoMerging(problem, base="adamerging", rank=0)  # AdaMerging alone: only its coefficients train
    assert [p.shape for p in baseline.trainable_parameters()] == [(n_tensors, 2)]
    # the AdaMerging base is theta_0 + sum_t lambda_{l,t} tau_{t,l}, differentiable in the coefficients
    with torch.no_grad():
        ada.coefficients[0] = torch.tensor([1.0, 0.0])
    torch.testing.assert_close(ada.base_parameters()["0.weight"], problem.expert_states[0]["0.weight"])


def _vit_b32_problem(n_tasks: int) -> MergingProblem:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from mooframe.adapters.hf_clip import UPSCALE_PRESETS, HFCLIPVisionBackbone

    with torch.device("meta"):
        backbone = HFCLIPVisionBackbone(CLIPVisionModel(CLIPVisionConfig()))
        heads = [nn.Linear(768, 10) for _ in range(n_tasks)]
    data = [TensorDataset(torch.zeros(1, 1), torch.zeros(1))] * n_tasks
    experts = [dict(backbone.named_parameters())] * n_tasks
    return MergingProblem(backbone, experts, heads, data, upscale_presets=UPSCALE_PRESETS)


def test_trainable_parameter_count_on_a_vit_b32_shape_matches_the_formula():
    """Per adapted (m, n) weight: p q s + m p + n q + T s (p = q = rank, s = T); ViT-B/32 has 12 blocks of
    q, k, v, out (768 x 768) and fc1 (3072 x 768), fc2 (768 x 3072)."""
    n_tasks, rank = 8, 16
    problem = _vit_b32_problem(n_tasks)
    model = ParetoMerging(problem, rank=rank)
    assert len(model.adapted) == 12 * 6
    per_block = 4 * (rank * rank * n_tasks + 2 * 768 * rank + n_tasks * n_tasks)
    per_block += 2 * (rank * rank * n_tasks + (768 + 3072) * rank + n_tasks * n_tasks)
    trainable = sum(p.numel() for p in model.trainable_parameters())
    assert trainable == 12 * per_block == 2_806_272
    backbone = sum(p.numel() for p in problem.pretrained.parameters())
    assert backbone == 87_456_000 and trainable / backbone == pytest.approx(0.0321, abs=1e-4)


def test_weight_distance_objective_is_the_squared_distance_to_each_expert(tiny_merging_problem):
    problem = tiny_merging_problem
    problem.objective = "weight_distance"
    model = ParetoMerging(problem, rank=3)
    _randomize(model)
    solution = model(torch.tensor([0.5, 0.5]))
    losses = problem.losses(solution, None)
    flat = torch.cat([solution.params[n].flatten() for n, _ in problem.pretrained.named_parameters()])
    for t, state in enumerate(problem.expert_states):
        expert = torch.cat([v.flatten() for v in state.values()])
        torch.testing.assert_close(losses[t], ((flat - expert) ** 2).sum())
    torch.testing.assert_close(problem.losses(model.materialize([0.5, 0.5]), None), losses.detach())
    losses.sum().backward()
    assert model.tensors[0].core.grad.abs().sum() > 0
    # names a FunctionalModel leaves out are the module's own (the pretrained weights)
    partial = FunctionalModel(problem.pretrained, {})
    expected = [
        sum(((v - problem.pretrained_state()[n]) ** 2).sum() for n, v in s.items()) for s in problem.expert_states
    ]
    torch.testing.assert_close(problem.losses(partial, None), torch.stack(expected))
    with pytest.raises(ValueError, match="needs a solution with parameters"):
        problem.losses(torch.zeros(3), None)


def test_bad_options_say_what_to_pass(tiny_merging_problem):
    problem = tiny_merging_problem
    with pytest.raises(ValueError, match="unknown base merge 'dare'; known: task_arithmetic, ties, adamerging"):
        ParetoMerging(problem, base="dare")
    with pytest.raises(ValueError, match="unknown up-scaling preset 'mlp'"):
        ParetoMerging(problem, layers="mlp")
    with pytest.raises(ValueError, match="match no module"):
        ParetoMerging(problem, layers=["nothing"])
    normed = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8))
    normed_problem = MergingProblem(normed, [normed.state_dict()] * 2, problem.heads, problem.train_data)
    with pytest.raises(ValueError, match="selects no nn.Linear"):
        ParetoMerging(normed_problem, layers=["1"])  # the LayerNorm: parameters, but no linear weight
    with pytest.raises(ValueError, match="rank must be >= 0"):
        ParetoMerging(problem, rank=-1)
    with pytest.raises(ValueError, match="needs a MergingProblem"):
        solve("zdt1", model="pareto_merging", steps=1, progress=False)


def test_trained_front_beats_its_base_merge_and_round_trips(tiny_merging_problem, tmp_path):
    """On a tiny merging problem: at e_t the learned model improves task t over the base merge (test loss), and
    the front's hypervolume of the test losses is above the base merge's alone."""
    problem = tiny_merging_problem
    result = solve(
        problem, "pareto_merging", "smooth_tchebycheff", steps=60, lr=5e-2, progress=False, model_kwargs={"rank": 4}
    )
    base = problem.evaluate(FunctionalModel(problem.pretrained, result.model.base_parameters())).metrics["loss"]
    front = result.front(n=11).metrics["loss"]
    for t in range(2):
        assert front[10 * (1 - t), t] < base[t] - 0.05
    # and the set trades off: task a is better at e_1 than at e_2 and task b the other way round (one model for
    # every preference, improving both tasks over the base merge, passed the bounds above)
    assert front[10, 0] < front[0, 0] - 1e-3 and front[0, 1] < front[10, 1] - 1e-3
    reference = np.maximum(front.max(0), base) + 0.1
    assert hypervolume(front, reference).value > hypervolume(base[None], reference).value
    loaded = ParetoSetResult.load(result.save(tmp_path / "run"), problem=problem)
    inputs = problem.test_data[0].tensors[0]
    torch.testing.assert_close(loaded.model_at([0.3, 0.7])(inputs), result.model_at([0.3, 0.7])(inputs))


@pytest.mark.parametrize("solver", registered()["solver"])
def test_every_solver_trains_it(tiny_merging_problem, solver):
    result = solve(tiny_merging_problem, model="pareto_merging", solver=solver, steps=3, progress=False)
    assert np.isfinite(result.history["loss"]).all()
    assert all(tensor.core.abs().sum() > 0 for tensor in result.model.tensors)  # G left its zero initialization
