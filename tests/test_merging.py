"""Merging functions over state dicts, checked against independent computations on flattened vectors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from mooframe.merging import (
    add_weighted,
    add_weighted_experts,
    disjoint_merge,
    stack_task_vectors,
    task_arithmetic,
    task_vectors,
    ties_merging,
    trim_top_k,
    weight_average,
)
from mooframe.merging.fisher import _rows, diagonal_fisher, fisher_merge
from mooframe.merging.store import ExpertState, file_shapes


def _state(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(4, 3, generator=generator), "b": torch.randn(5, generator=generator)}


def _flat(state: dict[str, torch.Tensor]) -> np.ndarray:
    return np.concatenate([state[name].double().flatten().numpy() for name in ("w", "b")])


def _reference_ties(taus: list[np.ndarray], top_k: float, weights: np.ndarray) -> np.ndarray:
    """TIES on flat numpy vectors: keep the ceil(k n) largest magnitudes, elect the sign of the sum, disjoint mean."""
    trimmed = []
    for tau in taus:
        keep = int(np.ceil(top_k * tau.size))
        mask = np.zeros(tau.size, bool)
        mask[np.argsort(-np.abs(tau), kind="stable")[:keep]] = True
        trimmed.append(np.where(mask, tau, 0.0))
    weighted = weights[:, None] * np.stack(trimmed)
    agree = (np.sign(weighted) == np.sign(weighted.sum(0))) & (weighted != 0)
    return (weighted * agree).sum(0) / np.maximum(agree.sum(0), 1)


def test_task_vectors_and_task_arithmetic_match_flat_vectors():
    base, experts = _state(0), [_state(1), _state(2), _state(3)]
    taus = task_vectors(base, experts)
    for tau, expert in zip(taus, experts, strict=True):
        np.testing.assert_allclose(_flat(tau), _flat(expert) - _flat(base), atol=1e-6)
    lambdas = np.array([0.3, -0.5, 1.2])
    merged = task_arithmetic(base, taus, torch.tensor(lambdas))
    expected = _flat(base) + sum(lam * (_flat(e) - _flat(base)) for lam, e in zip(lambdas, experts, strict=True))
    np.testing.assert_allclose(_flat(merged), expected, atol=1e-5)
    np.testing.assert_allclose(_flat(task_arithmetic(base, taus[:1], 1.0)), _flat(experts[0]), atol=1e-6)
    scalar = task_arithmetic(base, taus, 0.3)
    np.testing.assert_allclose(_flat(scalar), _flat(base) + 0.3 * sum(_flat(t) for t in taus), atol=1e-5)


def test_task_arithmetic_is_differentiable_in_its_scaling():
    base, taus = _state(0), task_vectors(_state(0), [_state(1), _state(2)])
    scaling = torch.tensor([0.2, 0.7], requires_grad=True)
    sum(v.sum() for v in task_arithmetic(base, taus, scaling).values()).backward()
    np.testing.assert_allclose(scaling.grad.numpy(), [_flat(t).sum() for t in taus], rtol=1e-5)


def test_ties_on_a_hand_worked_example():
    base = {"a": torch.zeros(2), "b": torch.ones(2)}
    taus = [
        {"a": torch.tensor([3.0, -1.0]), "b": torch.tensor([0.5, 2.0])},
        {"a": torch.tensor([-2.0, -4.0]), "b": torch.tensor([0.1, 1.0])},
    ]
    # top half by magnitude over both tensors: task 1 keeps 3 and 2, task 2 keeps -2 and -4.
    merged = ties_merging(base, taus, scaling=0.5, top_k=0.5)
    torch.testing.assert_close(merged["a"], torch.tensor([1.5, -2.0]))
    torch.testing.assert_close(merged["b"], torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize("top_k", [0.1, 0.37, 1.0])
def test_ties_matches_a_flat_reference(top_k):
    base, experts = _state(0), [_state(s) for s in (1, 2, 3)]
    taus = task_vectors(base, experts)
    weights = np.array([0.6, 0.3, 0.1])
    merged = ties_merging(base, taus, scaling=0.4, top_k=top_k, weights=torch.tensor(weights))
    reference = _reference_ties([_flat(t) for t in taus], top_k, weights)
    np.testing.assert_allclose(_flat(merged), _flat(base) + 0.4 * reference, atol=1e-5)
    kept = [int((_flat(t) != 0).sum()) for t in trim_top_k(taus, top_k)]
    assert kept == [int(np.ceil(top_k * 17))] * 3


def test_disjoint_merge_with_a_zero_weight_ignores_that_task():
    taus = task_vectors(_state(0), [_state(1), _state(2)])
    only_first = disjoint_merge(taus, torch.tensor([2.0, 0.0]))
    np.testing.assert_allclose(_flat(only_first), 2 * _flat(taus[0]), atol=1e-6)


def test_weight_average_is_the_normalized_weighted_mean():
    states = [_state(s) for s in (1, 2, 3)]
    np.testing.assert_allclose(_flat(weight_average(states)), np.mean([_flat(s) for s in states], 0), atol=1e-6)
    weighted = weight_average(states, [1.0, 3.0, 0.0])
    np.testing.assert_allclose(_flat(weighted), 0.25 * _flat(states[0]) + 0.75 * _flat(states[1]), atol=1e-6)


def test_add_weighted_values_and_gradients():
    base = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    stacked = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    coefficients = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(add_weighted, (base, stacked, coefficients))
    torch.testing.assert_close(
        add_weighted(base, stacked, coefficients), base + torch.einsum("t,tij->ij", coefficients, stacked)
    )


def test_add_weighted_experts_is_the_task_vector_merge_with_its_gradients():
    base = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    experts = [torch.randn(3, 4, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    coefficients = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda b, c, *e: add_weighted_experts(b, e, c), (base, coefficients, *experts))
    expected = base + sum(c * (e - base) for c, e in zip(coefficients, experts, strict=True))
    torch.testing.assert_close(add_weighted_experts(base, experts, coefficients), expected)


def test_add_weighted_experts_in_float32_matches_float64_on_fine_tuned_experts():
    """Experts close to theta_0 (tau ~ 1e-3 theta): the merge stays within a few float32 rounding errors of |theta|
    and the gradient in c, <theta_t - theta_0, g>, does not suffer the cancellation of <theta_t, g> - <theta_0, g>."""
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(64, 48, generator=generator)
    experts = [base + 1e-3 * torch.randn(64, 48, generator=generator) for _ in range(3)]
    coefficients = torch.tensor([0.3, -0.8, 1.7], requires_grad=True)
    grad = torch.randn(64, 48, generator=generator)
    merged = add_weighted_experts(base, experts, coefficients)
    merged.backward(grad)
    taus = [e.double() - base.double() for e in experts]
    exact = base.double() + sum(float(c) * tau for c, tau in zip(coefficients.detach(), taus, strict=True))
    assert float((merged.detach().double() - exact).abs().max()) <= 8 * torch.finfo(torch.float32).eps * float(
        base.abs().max()
    )
    exact_grad = torch.stack([(tau * grad.double()).sum() for tau in taus])
    torch.testing.assert_close(coefficients.grad.double(), exact_grad, rtol=1e-5, atol=0)


def test_bfloat16_dictionary_merges_its_rounded_values_in_float32():
    taus = task_vectors(_state(0), [_state(1), _state(2)])
    stacked = stack_task_vectors(taus, dtype=torch.bfloat16)
    assert stacked["w"].dtype == torch.bfloat16 and stacked["w"].shape == (2, 4, 3)
    coefficients = torch.tensor([0.3, 0.6], requires_grad=True)
    merged = add_weighted(_state(0)["w"], stacked["w"], coefficients)
    assert merged.dtype == torch.float32
    torch.testing.assert_close(merged, _state(0)["w"] + torch.einsum("t,tij->ij", coefficients, stacked["w"].float()))
    merged.sum().backward()
    torch.testing.assert_close(coefficients.grad, stacked["w"].float().sum((1, 2)))


def test_mismatched_inputs_are_named():
    base, other = _state(0), _state(1)
    other["extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected \\['extra'\\]"):
        task_vectors(base, [other])
    with pytest.raises(ValueError, match="'w' has shape \\(2,\\)"):
        task_arithmetic(base, [{"w": torch.zeros(2), "b": torch.zeros(5)}])
    with pytest.raises(ValueError, match="one entry per task \\(2\\)"):
        task_arithmetic(base, task_vectors(base, [_state(1), _state(2)]), [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="top_k"):
        trim_top_k([base], 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        weight_average([base, base], [1.0, -1.0])
    with pytest.raises(ValueError, match="pass T tensors of the base's shape"):
        add_weighted_experts(base["w"], [base["w"], base["b"]], torch.ones(2))
    with pytest.raises(ValueError, match="and T coefficients"):
        add_weighted(base["w"], torch.zeros(2, 4, 3), torch.ones(3))


def test_merging_functions_errors_and_dtypes_by_hand():
    states = [{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}]
    with pytest.raises(ValueError, match=r"^weights must be non-negative with a positive sum, got \[0.0, 0.0\]$"):
        weight_average(states, [0.0, 0.0])
    with pytest.raises(ValueError, match="^stack_task_vectors needs at least one task vector$"):
        stack_task_vectors([])
    ones = [{"w": torch.ones(2)}, {"w": torch.ones(2)}]
    with pytest.raises(ValueError, match="^state 1 does not have the pretrained model's parameter names"):
        fisher_merge([states[0], {"v": torch.ones(2)}], ones)
    # per entry (F_1 theta_1 + F_2 theta_2) / (F_1 + F_2) = (1 * 1 + 3 * 3) / 4 and (1 * 2 + 3 * 6) / 4, in float64
    doubles = [{"w": s["w"].double()} for s in states]
    merged = fisher_merge(doubles, [{"w": torch.ones(2)}, {"w": torch.full((2,), 3.0)}])
    assert merged["w"].dtype == torch.float64 and merged["w"].tolist() == [2.5, 5.0]


def test_an_expert_state_casts_its_low_rank_factors_too():
    b, a = torch.ones(2, 1), torch.full((1, 3), 0.5)
    state = ExpertState({"w": torch.Size([2, 3])}, lambda name: torch.zeros(2, 3), factors={"w": (b, a)})
    state.to(dtype=torch.float64)
    assert state["w"].dtype == torch.float64 and state["w"].tolist() == [[0.5] * 3] * 2
    assert all(f.dtype == torch.float64 for f in state._factors["w"])


def test_an_expert_state_releases_cumulatively_and_keeps_what_it_was_told_to(tmp_path):
    shapes = {name: torch.Size([1, 1]) for name in "abc"}
    factors = {name: (torch.ones(1, 1), torch.full((1, 1), 2.0)) for name in "abc"}
    state = ExpertState(shapes, lambda name: torch.zeros(1, 1), factors=factors)
    state.release(keep={"a"}, by="the first merge")
    state.release(keep={"a", "b"}, by="the second merge")  # b stays released
    assert state.factors("a") is not None and state["a"].tolist() == [[2.0]]
    assert state.factors("b") is None and state.factors("c") is None
    with pytest.raises(KeyError, match="released after the second merge"):
        state["b"]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(
        ValueError, match=r"bad.safetensors is not a readable safetensors file \(.*\); pass one written"
    ):
        file_shapes(bad)


def test_ties_defaults_names_and_stacking_order_by_hand():
    base = {"w": torch.zeros(5)}
    tau = {"w": torch.tensor([5.0, -4.0, 3.0, 2.0, 1.0])}
    # defaults: keep the top 20% (one entry of five), scaling 0.3
    assert ties_merging(base, [tau])["w"].tolist() == pytest.approx([1.5, 0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="^task vector 1 does not have the pretrained model's parameter names"):
        ties_merging(base, [tau, {"v": torch.ones(5)}])
    first, second = {"w": torch.ones(2), "b": torch.zeros(1)}, {"b": torch.ones(1), "w": torch.zeros(2)}
    stacked = stack_task_vectors([first, second])
    assert list(stacked) == ["w", "b"] and stacked["b"].tolist() == [[0.0], [1.0]]
    assert list(stack_task_vectors([first, second], names=["b"])) == ["b"]


def test_the_merge_gives_the_base_its_gradient_when_only_the_base_needs_one():
    base = torch.zeros(3, requires_grad=True)
    merged = add_weighted(base, torch.ones(2, 3), torch.tensor([0.5, 0.25]))
    (merged * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert base.grad.tolist() == [1.0, 2.0, 3.0]
    experts_base = torch.zeros(3, requires_grad=True)
    add_weighted_experts(experts_base, [torch.ones(3)] * 2, torch.tensor([0.5, 0.25])).sum().backward()
    assert experts_base.grad.tolist() == [0.25] * 3  # d/d theta_0 of (1 - sum c) theta_0 + ...


def test_task_arithmetic_defaults_and_messages_by_hand():
    base, tau = {"w": torch.zeros(2)}, {"w": torch.tensor([1.0, -2.0])}
    assert task_arithmetic(base, [tau])["w"].tolist() == pytest.approx([0.3, -0.6])  # default lambda 0.3
    with pytest.raises(ValueError, match=r"^scaling must be a number or have one entry per task \(1\), got shape"):
        task_arithmetic(base, [tau], scaling=[0.1, 0.2])
    with pytest.raises(ValueError, match="^task vector 1 does not have the pretrained model's parameter names"):
        task_arithmetic(base, [tau, {"v": torch.ones(2)}])


def test_ties_and_fisher_checks_name_the_problem_and_keep_the_vectors_dtype():
    a, b = {"w": torch.tensor([3.0, -1.0, 2.0, 0.5, 4.0])}, {"v": torch.ones(5)}
    assert trim_top_k([a])[0]["w"].tolist() == [0.0, 0.0, 0.0, 0.0, 4.0]  # default: the top 20%, one entry of five
    assert trim_top_k([a], top_k=0.01)[0]["w"].tolist() == [0.0, 0.0, 0.0, 0.0, 4.0]  # at least one entry
    with pytest.raises(ValueError, match=r"top_k is the fraction of entries kept and must be in \(0, 1\], got 1.5"):
        trim_top_k([a], top_k=1.5)
    assert disjoint_merge([a])["w"].tolist() == a["w"].tolist()  # one task: its own entries
    halves = disjoint_merge([{"w": a["w"].bfloat16()}] * 2, [0.5, 0.25])["w"]
    assert halves.dtype == torch.bfloat16 and halves.tolist() == [1.125, -0.375, 0.75, 0.1875, 1.5]  # (0.5 + 0.25) / 2
    with pytest.raises(ValueError, match=r"^weights must be a number or have one entry per task \(2\)"):
        disjoint_merge([a, a], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"^TIES weights must be non-negative, got \[1.0, -1.0\]$"):
        disjoint_merge([a, a], [1.0, -1.0])
    for vectors, t in (([a, b, b], 1), ([a, a, b], 2)):
        with pytest.raises(ValueError, match=f"^task vector {t} does not have the pretrained model's parameter names"):
            disjoint_merge(vectors)
    with pytest.raises(ValueError, match="^fisher_merge needs one Fisher per state, got 1 states and 0$"):
        fisher_merge([a], [])


def test_regmean_weight_by_a_separate_least_squares_solution():
    from mooframe.merging.regmean import regmean_weight

    weights = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]])]
    grams = [torch.tensor([[2.0, 1.0], [1.0, 3.0]]), torch.tensor([[1.0, -0.5], [-0.5, 2.0]])]
    scaled = [0.9 * g.double().numpy() + 0.1 * np.diag(np.diag(g.double().numpy())) for g in grams]  # default 0.9
    rhs = sum(g @ w.double().numpy().T for g, w in zip(scaled, weights, strict=True))
    expected = np.linalg.solve(sum(scaled), rhs).T
    merged = regmean_weight(weights, grams)
    assert merged.dtype == torch.float32
    np.testing.assert_allclose(merged.numpy(), expected, rtol=1e-6)
    assert regmean_weight([weights[0], weights[1].double()], grams).dtype == torch.float32  # the first weight's
    with pytest.raises(ValueError, match="^regmean_weight needs one Gram matrix per weight, got 2 and 1$"):
        regmean_weight(weights, grams[:1])


def test_fisher_merge_of_one_state_and_the_merge_errors_name_the_shapes():
    a = {"w": torch.tensor([1.0, -2.0])}
    assert fisher_merge([a], [{"w": torch.ones(2)}])["w"].tolist() == [1.0, -2.0]
    with pytest.raises(ValueError, match="^Fisher 1 does not have the pretrained model's parameter names"):
        fisher_merge([a, a], [{"w": torch.ones(2)}, {"v": torch.ones(2)}])
    message = (
        "cannot merge base (2,) with 4 tensors (shapes [(3,), (3,), (3,)], ...) and coefficients (4,): pass T "
        "tensors of the base's shape, or one (T, *shape) tensor, and T coefficients"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        add_weighted(torch.zeros(2), torch.zeros(4, 3), torch.ones(4))


def test_merging_messages_name_the_argument_and_what_to_pass():
    a = {"w": torch.ones(2)}
    with pytest.raises(ValueError, match="^weight_average needs at least one state dict$"):
        weight_average([])
    with pytest.raises(ValueError, match=r"^weights must be a number or have one entry per task \(2\), got shape"):
        weight_average([a, a], [1.0])
    with pytest.raises(ValueError, match=r"^weights contains NaN or inf: \[1.0, nan\]$"):
        weight_average([a, a], [1.0, float("nan")])
    assert weight_average([a, {"w": torch.full((2,), 3.0)}], [0.25, 0.25])["w"].tolist() == [2.0, 2.0]  # sum 0.5
    assert weight_average([{"w": torch.ones(1, dtype=torch.float64) / 3}])["w"].item() == 1 / 3  # weights kept exact
    for states, t in (([a, {"v": torch.ones(2)}, {"v": torch.ones(2)}], 1), ([a, a, {"v": torch.ones(2)}], 2)):
        with pytest.raises(ValueError, match=f"^state {t} does not have the pretrained model's parameter names"):
            weight_average(states)
    names = {f"p{i}": torch.ones(1) for i in range(5)}
    message = (
        "expert 0 does not have the pretrained model's parameter names: missing ['p0', 'p1', 'p2'], unexpected "
        "['q0', 'q1', 'q2']; pass state dicts of the same architecture"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        task_vectors(names, [{f"q{i}": torch.ones(1) for i in range(5)}])
    with pytest.raises(ValueError, match="^diagonal_fisher got no examples; pass at least one batch$"):
        diagonal_fisher(lambda params, x, y: (params["w"] * x).sum(), {"w": torch.ones(2)}, [])
    rows = _rows({"x": torch.arange(5), "y": {"z": torch.arange(5) * 2}}, 1, 2)
    assert rows["x"].tolist() == [1, 2] and rows["y"]["z"].tolist() == [2, 4]
    assert _rows({"x": torch.arange(5)}, 3, 1, squeeze=True)["x"].item() == 3


def test_an_expert_state_reads_its_file_in_its_dtype_and_names_what_is_missing(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2, dtype=torch.float64)}, str(tmp_path / "expert.safetensors"))
    shapes = {"w": torch.Size([2]), "low": torch.Size([1, 1])}
    factors = {"low": (torch.ones(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64))}
    state = ExpertState(shapes, lambda n: torch.zeros(1, 1, dtype=torch.float64), path=tmp_path / "expert.safetensors",
                        factors=factors)  # fmt: skip
    assert state["w"].dtype == torch.float32 and state["w"].tolist() == [1.0, 1.0]
    with pytest.raises(KeyError, match="'nothing'"):
        state["nothing"]
    state.release(keep={"low"}, by="PWE-MoE")
    with pytest.raises(KeyError, match=r"\(release_experts=True\); build the problem again to read it"):
        state["w"]
