"""The paper's merging baselines against independent computations on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from mooframe import solve
from mooframe.merging import disjoint_merge, trim_top_k
from mooframe.merging.regmean import regmean_weight
from mooframe.models.baselines import FixedMerge, task_batches
from mooframe.models.sweeps import PAPER_LAMBDAS, lambda_sweep
from mooframe.problems.merging import MergingProblem
from mooframe.registry import build_model, registered, resolve


def tiny_problem(n_tasks: int = 2, seed: int = 0, batch_size: int = 5) -> MergingProblem:
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5))
    experts = []
    for _ in range(n_tasks):
        expert = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5))
        with torch.no_grad():
            for p, q in zip(expert.parameters(), backbone.parameters(), strict=True):
                p.copy_(q + 0.3 * torch.randn_like(q))
        experts.append(expert)
    heads = [nn.Linear(5, 3) for _ in range(n_tasks)]
    data = [TensorDataset(torch.randn(20, 4), torch.randint(0, 3, (20,))) for _ in range(n_tasks)]
    return MergingProblem(backbone, experts, heads, data, batch_size=batch_size)


def merged_state(model) -> dict[str, torch.Tensor]:
    return dict(model.materialize([0.5, 0.5]).named_parameters())


def test_weight_averaging_is_the_mean_of_the_experts_at_every_preference():
    problem = tiny_problem()
    model = build_model("weight_average", problem)
    for pref in ([1.0, 0.0], [0.3, 0.7]):
        for name, value in model.materialize(pref).named_parameters():
            expected = (problem.expert_states[0][name] + problem.expert_states[1][name]) / 2
            torch.testing.assert_close(value, expected)


def test_fisher_merging_equals_a_loop_over_examples_with_autograd():
    problem = tiny_problem()
    model = build_model("fisher_merging", problem, batches=2, seed=3)
    data = task_batches(problem, 2, seed=3)
    fishers = []
    for task, state in enumerate(problem.expert_states):
        expert = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5))
        expert.load_state_dict(state)
        squares = {name: torch.zeros_like(p) for name, p in expert.named_parameters()}
        count = 0
        for inputs, labels in data[task]:
            for x, y in zip(inputs, labels, strict=True):
                loss = F.cross_entropy(problem.heads[task](expert(x[None])), y[None])
                grads = torch.autograd.grad(loss, list(expert.parameters()))
                for (name, _), g in zip(expert.named_parameters(), grads, strict=True):
                    squares[name] += g**2
                count += 1
        assert count == 10
        fishers.append({name: (value / count).clamp(min=1e-6) for name, value in squares.items()})
    for name, value in merged_state(model).items():
        weights = [f[name] for f in fishers]
        expected = sum(w * s[name] for w, s in zip(weights, problem.expert_states, strict=True)) / sum(weights)
        torch.testing.assert_close(value, expected)
    # and it is not the plain average: the Fisher weights matter
    average = merged_state(build_model("weight_average", problem))
    assert not torch.allclose(merged_state(model)["2.weight"], average["2.weight"], atol=1e-3)


def test_regmean_on_one_linear_layer_is_the_least_squares_solution_of_the_joint_regression():
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(30, 5, generator=generator, dtype=torch.float64) for _ in range(3)]
    weights = [torch.randn(4, 5, generator=generator, dtype=torch.float64) for _ in range(3)]
    grams = [x.T @ x for x in inputs]
    merged = regmean_weight(weights, grams, alpha=1.0)
    stacked_x = torch.cat(inputs)
    targets = torch.cat([x @ w.T for x, w in zip(inputs, weights, strict=True)])
    expected = torch.linalg.lstsq(stacked_x, targets).solution.T
    torch.testing.assert_close(merged, expected)
    # alpha = 0 keeps only the diagonals: a per-input-feature weighted mean of the experts' columns
    diag = torch.stack([g.diagonal() for g in grams])
    column_mean = sum(d * w for d, w in zip(diag, weights, strict=True)) / diag.sum(0)
    torch.testing.assert_close(regmean_weight(weights, grams, alpha=0.0), column_mean)


def test_regmean_model_merges_each_linear_layer_from_the_inputs_its_expert_sees():
    problem = tiny_problem()
    model = build_model("regmean", problem, batches=2, alpha=0.7, seed=1)
    data = task_batches(problem, 2, seed=1)
    grams = {"0": [], "2": []}
    for task, state in enumerate(problem.expert_states):
        expert = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5))
        expert.load_state_dict(state)
        x = torch.cat([inputs for inputs, _ in data[task]]).double()
        hidden = torch.tanh(expert[0](x.float())).double()
        for name, layer_input in (("0", x), ("2", hidden)):
            gram = layer_input.T @ layer_input / len(layer_input)
            grams[name].append(0.7 * gram + 0.3 * torch.diag(gram.diagonal()))
    merged = merged_state(model)
    for name in ("0", "2"):
        w = [s[f"{name}.weight"].double() for s in problem.expert_states]
        expected = torch.linalg.solve(sum(grams[name]), sum(g @ wt.T for g, wt in zip(grams[name], w, strict=True))).T
        torch.testing.assert_close(merged[f"{name}.weight"].double(), expected, atol=1e-5, rtol=1e-5)
        mean_bias = (problem.expert_states[0][f"{name}.bias"] + problem.expert_states[1][f"{name}.bias"]) / 2
        torch.testing.assert_close(merged[f"{name}.bias"], mean_bias)


@pytest.mark.parametrize("model", ["task_arithmetic", "ties"])
def test_lambda_sweep_is_the_plain_merge_at_each_lambda(model):
    problem = tiny_problem(n_tasks=3)
    sweep = lambda_sweep(problem, model)
    assert sweep.lambdas == list(PAPER_LAMBDAS) and len(sweep.front.objectives) == 11
    theta_0 = problem.pretrained_state()
    taus = [{k: s[k] - theta_0[k] for k in theta_0} for s in problem.expert_states]
    if model == "ties":  # sign election and disjoint mean of the trimmed vectors, all tasks weighted 1
        summed = disjoint_merge(trim_top_k(taus, 0.2))
    else:
        summed = {k: sum(tau[k] for tau in taus) for k in theta_0}
    backbone = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5))
    for i, value in enumerate(sweep.lambdas):
        backbone.load_state_dict({k: theta_0[k] + value * summed[k] for k in theta_0})
        expected = problem.evaluate(backbone)
        np.testing.assert_allclose(sweep.front.objectives[i], expected.objectives)
    assert sweep.front.metrics["accuracy"].shape == (11, 3)
    assert 0 <= sweep.best() < 11


def test_baselines_train_nothing_and_run_through_solve():
    problem = tiny_problem()
    fixed = [name for name in registered()["model"] if issubclass(resolve("model", name), FixedMerge)]
    assert len(fixed) >= 4 and "pretrained" in fixed
    for name in fixed:
        result = solve(problem, model=name, steps=0, progress=False)
        assert result.model.trainable_parameters() == []
        front = result.front(n=3)
        np.testing.assert_allclose(front.objectives, front.objectives[[0, 0, 0]])  # one model at every preference
    pretrained = solve(problem, model="pretrained", steps=0, progress=False).model_at([0.5, 0.5])
    for name, value in pretrained.named_parameters():
        torch.testing.assert_close(value, problem.pretrained_state()[name])


def test_baseline_options_are_checked():
    problem = tiny_problem()
    with pytest.raises(ValueError, match="batches must be >= 1"):
        build_model("fisher_merging", problem, batches=0)
    with pytest.raises(ValueError, match=r"alpha .* must be in \[0, 1\]"):
        build_model("regmean", problem, alpha=1.5)
    with pytest.raises(ValueError, match="sets the scaling itself"):
        lambda_sweep(problem, "task_arithmetic", scaling=0.3)


def test_diagonal_fisher_falls_back_from_vmap_on_data_dependent_control_flow():
    from mooframe.merging.fisher import diagonal_fisher

    weight = torch.randn(3, 4, dtype=torch.float64)

    def example_loss(params, x, y):
        scale = 2.0 if x.sum() > 0 else 1.0  # data-dependent: vmap cannot trace it
        return F.cross_entropy((scale * x @ params["w"].T)[None], y[None])

    inputs, labels = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,))
    fisher = diagonal_fisher(example_loss, {"w": weight}, [(inputs, labels)], chunk_size=4)
    expected = torch.zeros_like(weight)
    for x, y in zip(inputs, labels, strict=True):
        w = weight.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(example_loss({"w": w}, x, y), [w])
        expected += g**2
    torch.testing.assert_close(fisher["w"], (expected / 6).float())


def test_regmean_handles_gpt2_conv1d_weights_as_transposed_linear_layers():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)

    def body():
        return nn.Sequential(Conv1D(5, 4), nn.Tanh())  # y = x W + b with W of shape (4, 5)

    backbone, experts = body(), [body(), body()]
    problem = MergingProblem(
        backbone,
        experts,
        [nn.Linear(5, 2), nn.Linear(5, 2)],
        [TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(2)],
        batch_size=4,
    )
    merged = merged_state(build_model("regmean", problem, batches=2, alpha=1.0))
    data = task_batches(problem, 2, seed=0)
    grams = [sum(x.double().T @ x.double() for x, _ in data[t]) / 8 for t in range(2)]
    weights = [s["0.weight"].double() for s in problem.expert_states]
    expected = torch.linalg.solve(sum(grams), sum(g @ w for g, w in zip(grams, weights, strict=True)))
    torch.testing.assert_close(merged["0.weight"].double(), expected, atol=1e-5, rtol=1e-5)


def test_input_grams_sum_x_t_x_over_every_row_of_every_call():
    from mooframe.merging.regmean import input_grams, scale_off_diagonal

    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    first = torch.arange(12.0).reshape(2, 2, 3)  # a (batch, tokens, features) input: 4 rows
    second = torch.ones(1, 3)

    def run():
        model(first)
        model(second)

    grams = input_grams(model, ["0"], run)
    rows = torch.cat([first.reshape(-1, 3), second]).double()
    assert list(grams) == ["0"] and grams["0"][1] == 5
    torch.testing.assert_close(grams["0"][0], rows.T @ rows)
    gram = torch.tensor([[2.0, 1.0], [1.0, 4.0]])
    assert scale_off_diagonal(gram, 0.25).tolist() == [[2.0, 0.25], [0.25, 4.0]]
    for alpha in (-0.5, 1.5):
        with pytest.raises(ValueError, match=rf"alpha must be in \[0, 1\], got {alpha}"):
            scale_off_diagonal(gram, alpha)
