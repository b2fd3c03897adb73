"""Low-rank experts: truncated SVD, the factored linear merge, PEFT LoRA experts, lazy safetensors, released experts."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model  # at collection: mutmut's forked test runs then inherit the import
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import TensorDataset

from mooframe.adapters.peft import lora_experts
from mooframe.merging.lowrank import LowRankTaskVectors, kept_rank, product_svd, truncated_svd
from mooframe.merging.store import LowRankExpert
from mooframe.models.pwe_moe import PWEMoE
from mooframe.models.task_arithmetic import PreferenceTaskArithmetic
from mooframe.problems.merging import MergingProblem


class _Mlp(nn.Module):
    def __init__(self, width: int = 12) -> None:
        super().__init__()
        self.embed = nn.Linear(6, width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        return h + self.fc2(torch.relu(self.fc1(h)))


PRESETS = {"mlp": [r"fc1", r"fc2"]}


def _problem(pretrained: nn.Module, experts: list, seed: int = 0) -> MergingProblem:
    generator = torch.Generator().manual_seed(seed)
    heads = [nn.Linear(12, 3) for _ in experts]
    data = [TensorDataset(torch.randn(64, 6, generator=generator), torch.randint(0, 3, (64,))) for _ in experts]
    return MergingProblem(pretrained, experts, heads, data, batch_size=16, upscale_presets=PRESETS)


def _dense_experts(pretrained: nn.Module, n: int = 2) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(5)
    return [
        {k: v.detach() + 0.1 * torch.randn(v.shape, generator=generator) for k, v in pretrained.state_dict().items()}
        for _ in range(n)
    ]


def _lora_model(seed: int = 0):
    """A tiny model with two LoRA adapters (random B, so that they are not zero) on fc1 and fc2, and its base."""
    torch.manual_seed(seed)
    base = _Mlp()
    config = {"r": 3, "target_modules": ["fc1", "fc2"], "init_lora_weights": False}
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(lora_alpha=6, **config), adapter_name="first")
    peft_model.add_adapter("second", LoraConfig(lora_alpha=2, **config))
    return base, peft_model


def _randomize_routers(model: PWEMoE, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator))


def test_truncated_svd_keeps_the_rank_or_energy_asked_and_reports_its_error():
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(20, 4, generator=generator) @ torch.randn(4, 9, generator=generator)
    matrix += 0.05 * torch.randn(20, 9, generator=generator)
    u, s, v, error = truncated_svd(matrix, 3)
    assert u.shape == (20, 3) and s.shape == (3,) and v.shape == (9, 3)
    direct = torch.linalg.matrix_norm(matrix - (u * s) @ v.T) / torch.linalg.matrix_norm(matrix)
    assert error == pytest.approx(float(direct), rel=1e-4)
    spectrum = torch.linalg.svdvals(matrix).double()
    energy = spectrum.square().cumsum(0) / spectrum.square().sum()
    k = kept_rank(spectrum, 0.99)
    assert energy[k - 1] >= 0.99 and (k == 1 or energy[k - 2] < 0.99)
    assert truncated_svd(matrix, 0.99)[1].numel() == k
    assert truncated_svd(matrix, 50)[1].numel() == 9  # capped
    with pytest.raises(ValueError, match="task_vector_rank"):
        PWEMoE(_problem(_Mlp(), _dense_experts(_Mlp())), task_vector_rank=0)


def test_product_svd_is_the_exact_svd_of_the_product():
    generator = torch.Generator().manual_seed(1)
    b, a = torch.randn(15, 4, generator=generator), torch.randn(4, 7, generator=generator)
    u, s, v, error = product_svd(b, a, 1.0)
    torch.testing.assert_close((u * s) @ v.T, b @ a, rtol=0, atol=1e-5)
    torch.testing.assert_close(s, torch.linalg.svdvals(b @ a)[:4], rtol=1e-5, atol=1e-5)
    assert error == 0.0 and u.shape == (15, 4)
    torch.testing.assert_close(u.T @ u, torch.eye(4), rtol=0, atol=1e-5)


def test_factored_linear_equals_the_dense_merge_and_saves_no_weight_sized_tensor():
    generator = torch.Generator().manual_seed(2)
    w0, bias = torch.randn(10, 8, generator=generator), torch.randn(10, generator=generator)
    taus = [torch.randn(10, 2, generator=generator) @ torch.randn(2, 8, generator=generator) for _ in range(3)]
    vectors = LowRankTaskVectors([truncated_svd(tau, 1.0) for tau in taus], torch.float32)
    x = torch.randn(5, 8, generator=generator)
    c = torch.tensor([0.3, -0.2, 0.7], requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = nn.functional.linear(x, vectors.merged(w0, c), bias)
    (grad,) = torch.autograd.grad(y.square().sum(), c)
    reference_c = c.detach().clone().requires_grad_()
    dense = w0 + sum(ct * tau for ct, tau in zip(reference_c, taus, strict=True))
    reference = x @ dense.T + bias
    (reference_grad,) = torch.autograd.grad(reference.square().sum(), reference_c)
    torch.testing.assert_close(y, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(grad, reference_grad, rtol=1e-5, atol=1e-5)
    assert all(t.shape != w0.shape or t.data_ptr() == w0.data_ptr() for t in saved)
    # any other use of the weight sees the dense merge
    torch.testing.assert_close(vectors.merged(w0, c.detach()) * 1.0, dense.detach(), rtol=0, atol=1e-5)


def test_lora_experts_low_rank_path_equals_the_full_rank_merge():
    base, peft_model = _lora_model()
    pretrained, experts = lora_experts(peft_model)
    assert type(pretrained) is _Mlp and sorted(experts[0].factors) == ["fc1.weight", "fc2.weight"]
    problem = _problem(pretrained, experts)
    full = PWEMoE(problem, upscale="mlp")
    low = PWEMoE(problem, upscale="mlp", task_vector_rank=1.0)
    _randomize_routers(full)
    low.load_trainable_state(full.trainable_state())
    assert [v.ranks for v in low.low_rank] == [[3, 3], [3, 3]]
    assert max(e for errors in low.truncation_errors.values() for e in errors) == 0.0
    x, labels = problem.train_data[0].tensors
    pref = torch.tensor([0.35, 0.65])
    losses, grads = [], []
    for model in (full, low):
        y = model(pref)(x)
        loss = nn.functional.cross_entropy(problem.heads[0](y), labels)
        grads.append(torch.autograd.grad(loss, model.trainable_parameters()))
        losses.append(y)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(low.materialize(pref)(x), full(pref)(x), rtol=1e-5, atol=1e-5)


def test_materialized_lora_merge_equals_peft_merged_model():
    base, peft_model = _lora_model(seed=3)
    reference = copy.deepcopy(peft_model)
    pretrained, experts = lora_experts(peft_model)
    problem = _problem(pretrained, experts)
    pref = [0.2, 0.8]
    model = PreferenceTaskArithmetic(problem, scaling=0.6, task_vector_rank=1.0)
    merged = model.materialize(pref)
    weights = [0.6 * 2 * r for r in pref]  # c_t = lambda T r_t
    reference.add_weighted_adapter(["first", "second"], weights, adapter_name="merged", combination_type="cat")
    reference.set_adapter("merged")
    peft_merged = reference.merge_and_unload()
    for (name, p), (peft_name, q) in zip(merged.named_parameters(), peft_merged.named_parameters(), strict=True):
        assert name == peft_name
        torch.testing.assert_close(p, q, rtol=0, atol=1e-5)
    x = torch.randn(7, 6)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), peft_merged(x), rtol=0, atol=1e-5)
    assert not torch.allclose(merged(x), base(x), atol=1e-3)  # the adapters moved it


def test_rank_k_store_and_error_bound_on_dense_experts():
    torch.manual_seed(0)
    pretrained = _Mlp()
    problem = _problem(pretrained, _dense_experts(pretrained))
    model = PWEMoE(problem, upscale="mlp", task_vector_rank=4, task_vector_dtype="bfloat16")
    vectors = model.low_rank[model.low_rank_index["fc1.weight"]]
    assert vectors.u.dtype == torch.bfloat16 and vectors.u.shape == (24, 8) and vectors.v.shape == (12, 8)
    assert set(model.vectors._index) == {"fc1.bias", "fc2.bias"}  # the rest of the up-scaled modules: dense
    full = PWEMoE(problem, upscale="mlp")
    _randomize_routers(full)
    model.load_trainable_state(full.trainable_state())
    pref = torch.tensor([0.6, 0.4])
    coefficients = full.coefficients(pref)
    theta_0 = problem.pretrained_state()
    with torch.no_grad():
        approx, exact = model.merged_parameters(pref), full.merged_parameters(pref)
        for name in ("fc1.weight", "fc2.weight"):
            errors = model.truncation_errors[name]
            norms = [float(torch.linalg.matrix_norm(s[name] - theta_0[name])) for s in problem.expert_states]
            c = coefficients[name.split(".")[0]]
            bound = sum(abs(float(ct)) * (e + 2**-7) * n for ct, e, n in zip(c, errors, norms, strict=True))
            assert 0 < float(torch.linalg.matrix_norm(approx[name].dense() - exact[name])) <= bound
            assert all(0 < e < 1 for e in errors)


def test_safetensors_experts_are_read_lazily_and_give_the_same_merge(tmp_path):
    torch.manual_seed(0)
    pretrained = _Mlp()
    experts = _dense_experts(pretrained)
    paths = []
    for t, state in enumerate(experts):
        paths.append(tmp_path / f"expert{t}.safetensors")
        save_file(state, str(paths[-1]))
    lazy, eager = _problem(copy.deepcopy(pretrained), paths), _problem(pretrained, experts)
    assert all(state.resident() == [] for state in lazy.expert_states)  # nothing read yet
    torch.testing.assert_close(lazy.expert_states[1]["fc2.bias"], experts[1]["fc2.bias"], rtol=0, atol=0)
    model, reference = PWEMoE(lazy, upscale="mlp"), PWEMoE(eager, upscale="mlp")
    held = {name for state in lazy.expert_states for name in state._tensors}
    assert held == set(model.groups)  # the up-scaled parameters only, memory-mapped
    reference.load_trainable_state(model.trainable_state())
    with torch.no_grad():
        a, b = model.merged_parameters(torch.tensor([0.3, 0.7])), reference.merged_parameters(torch.tensor([0.3, 0.7]))
    for name in b:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    with pytest.raises(ValueError, match="has no parameter 'fc1.weight'"):
        save_file({k: v for k, v in experts[0].items() if k != "fc1.weight"}, str(tmp_path / "bad.safetensors"))
        _problem(pretrained, [tmp_path / "bad.safetensors"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _problem(pretrained, [tmp_path / "missing.safetensors"])


@pytest.mark.parametrize("rank", [None, 3])
def test_released_experts_hold_only_what_is_read_and_merge_the_same(rank):
    torch.manual_seed(0)
    pretrained = _Mlp()
    experts = _dense_experts(pretrained)
    kept, released = _problem(copy.deepcopy(pretrained), experts), _problem(pretrained, experts)
    reference = PWEMoE(kept, upscale="mlp", task_vector_rank=rank)
    model = PWEMoE(released, upscale="mlp", task_vector_rank=rank, release_experts=True)
    _randomize_routers(reference)
    model.load_trainable_state(reference.trainable_state())
    held = {name for state in released.expert_states for name in state._tensors}
    assert held == ({"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"} if rank is None else {"fc1.bias", "fc2.bias"})
    assert len(model.fixed._index) == 0  # the backbone holds the once-merged rest
    x = kept.train_data[0].tensors[0]
    pref = torch.tensor([0.8, 0.2])
    with torch.no_grad():
        torch.testing.assert_close(model(pref)(x), reference(pref)(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(model.materialize(pref)(x), reference.materialize(pref)(x), rtol=0, atol=1e-6)
    with pytest.raises(KeyError, match="released after PWEMoE"):
        released.expert_states[0]["embed.weight"]
    with pytest.raises(ValueError, match="build the problem again"):
        PWEMoE(released)


def test_release_is_refused_where_every_expert_parameter_is_read():
    pretrained = _Mlp()
    problem = _problem(pretrained, _dense_experts(pretrained))
    problem.objective = "weight_distance"
    with pytest.raises(ValueError, match="weight_distance"):
        PWEMoE(problem, upscale="mlp", release_experts=True)


def test_low_rank_expert_factors_are_checked():
    pretrained = _Mlp()
    with pytest.raises(ValueError, match="factors of 'fc1.weight' have shapes"):
        _problem(pretrained, [LowRankExpert({"fc1.weight": (torch.zeros(24, 2), torch.zeros(2, 5))})])
    with pytest.raises(ValueError, match="no parameter 'fc9.weight'"):
        _problem(pretrained, [LowRankExpert({"fc9.weight": (torch.zeros(24, 2), torch.zeros(2, 12))})])


def test_saved_lora_adapters_load_as_the_same_experts(tmp_path):
    from mooframe.adapters.peft import load_lora_experts

    base, peft_model = _lora_model(seed=4)
    folders = []
    for adapter in ("first", "second"):
        peft_model.save_pretrained(str(tmp_path / adapter), selected_adapters=[adapter])
        folders.append(next(p.parent for p in (tmp_path / adapter).rglob("adapter_config.json")))
    _, expected = lora_experts(peft_model)
    loaded_base, loaded = load_lora_experts(copy.deepcopy(base), folders)
    assert [n for n, _ in loaded_base.named_parameters()] == [n for n, _ in base.named_parameters()]
    for a, b in zip(loaded, expected, strict=True):
        assert sorted(a.factors) == sorted(b.factors)
        for name in a.factors:
            torch.testing.assert_close(a.factors[name][0] @ a.factors[name][1], b.factors[name][0] @ b.factors[name][1])
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_lora_experts(copy.deepcopy(base), [tmp_path])


def test_low_rank_factors_are_not_part_of_a_saved_state():
    """A run saves the routers only: the factors are rebuilt from the experts, so no buffer is persistent."""
    vectors = LowRankTaskVectors(
        [truncated_svd(torch.eye(3), 1.0), truncated_svd(2 * torch.eye(3), 1.0)], torch.float32
    )
    assert vectors.state_dict() == {} and vectors.s.tolist() == [1.0] * 3 + [2.0] * 3
    assert vectors.task.dtype == torch.long and vectors.task.tolist() == [0, 0, 0, 1, 1, 1]


def test_a_low_rank_merged_weight_across_dtypes_and_through_other_operations(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    taus = [torch.randn(4, 3, generator=generator) for _ in range(2)]
    base, c = torch.randn(4, 3, generator=generator, dtype=torch.float64), torch.tensor([0.3, -0.7])
    x = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    for factor_dtype, base_dtype, atol in ((torch.bfloat16, torch.float64, 1e-6), (torch.float32, torch.bfloat16, 0.1)):
        vectors = LowRankTaskVectors([truncated_svd(t, 1.0) for t in taus], factor_dtype)
        weight = vectors.merged(base.to(base_dtype), c)
        # the reference, in float64 from the stored factors: W = W_0 + U diag(c_task s) V^T
        scales = (c[vectors.task] * vectors.s).double()
        expected = base.to(base_dtype).double() + (vectors.u.double() * scales) @ vectors.v.double().T
        dense = weight.dense()
        assert dense.dtype == base_dtype and not isinstance(dense, type(weight))
        torch.testing.assert_close(dense.double(), expected, rtol=0, atol=atol)
        with monkeypatch.context() as patch:  # F.linear never forms W (positional or keyword bias, or none)
            patch.setattr(type(weight), "dense", lambda self: pytest.fail("F.linear formed the dense weight"))
            inputs = x.to(base_dtype)
            torch.testing.assert_close(nn.functional.linear(inputs, weight).double(), inputs.double() @ expected.T,
                                       rtol=0, atol=atol)  # fmt: skip
            bias = torch.ones(4, dtype=base_dtype)
            out = nn.functional.linear(inputs, weight, bias=bias)
            torch.testing.assert_close(out.double(), inputs.double() @ expected.T + 1, rtol=0, atol=atol)
            assert weight.size(1) == 3 and weight.size(dim=0) == 4  # metadata answered without W
        # any other operation sees the dense W, keyword arguments included; so does F.linear with W as its input
        other = torch.ones(4, 3, dtype=base_dtype)
        torch.testing.assert_close(torch.add(weight, other, alpha=2.0).double(), expected + 2, rtol=0, atol=atol)
        plain = torch.ones(2, 3, dtype=base_dtype)
        torch.testing.assert_close(nn.functional.linear(weight, plain).double(), expected @ plain.double().T,
                                   rtol=0, atol=atol)  # fmt: skip
