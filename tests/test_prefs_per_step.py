"""K preferences a step (`solve(prefs_per_step=K)`) and the gradient-norm clip, against loops written here."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from toys import GramLS, RouterMerge

from mooframe.cli import main
from mooframe.models.hypernetwork import HypernetworkPSL
from mooframe.pareto_set import ParetoSetModel
from mooframe.problems.synthetic import ZDT1
from mooframe.result import ParetoSetResult
from mooframe.solve import solve
from mooframe.solvers.epo import EPO
from mooframe.solvers.ls import LinearScalarization

STEPS, SEED, LR = 6, 4, 1e-2


def _reference(problem, model, steps, count, weigh, optimizer=torch.optim.Adam, clip=None):
    """The loop as specified, written out: K Dirichlet(1) draws a step in turn, one forward per preference, the
    gradient (1/K) sum_k sum_t w_kt grad l_t(r_k) (of w_k . l(r_k) for a solver without the Gram matrix, else from
    one autograd.grad per objective), and an optimizer step."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer(params, lr=LR)
    rng, batches = np.random.default_rng(SEED), problem.batches(np.random.default_rng([SEED, 1]))
    n = problem.n_objectives
    for _ in range(steps):
        prefs = [torch.as_tensor(rng.dirichlet(np.ones(n)), dtype=torch.float32) for _ in range(count)]
        batch, total = next(batches), [torch.zeros_like(p) for p in params]
        for pref in prefs:
            losses = problem.losses(model(pref), batch)
            if weigh is _ls:
                direction = torch.autograd.grad(pref @ losses, params)
            else:
                rows = [torch.autograd.grad(losses[t], params, retain_graph=True) for t in range(n)]
                flat = torch.stack([torch.cat([g.flatten() for g in row]) for row in rows])
                w = weigh(losses.detach(), pref, flat @ flat.T).to(flat)
                direction = (w @ flat).split([p.numel() for p in params])
            total = [acc + d.view_as(p) / count for acc, d, p in zip(total, direction, params, strict=True)]
        if clip is not None:
            norm = torch.sqrt(sum((g.double() ** 2).sum() for g in total))
            total = [g * min(1.0, clip / float(norm)) for g in total]
        for p, g in zip(params, total, strict=True):
            p.grad = g
        opt.step()
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def _ls(losses, pref, gram):
    return pref


def _epo(n_objectives):
    epo = EPO()
    epo.reset(n_objectives)
    return lambda losses, pref, gram: epo.weights(losses, pref, gram=gram)


def _solve(problem, model, solver, **kwargs):
    options = {"steps": STEPS, "seed": SEED, "lr": LR, "lr_schedule": "constant", "progress": False}
    return solve(problem, model, solver, **{**options, **kwargs}).model.trainable_state()


def _hypernet():
    torch.manual_seed(0)
    problem = ZDT1(n_var=5)
    return problem, HypernetworkPSL(problem, hidden=16)


def _router(problem):
    torch.manual_seed(0)
    return RouterMerge(problem)


def _assert_equal(trained, expected, exact=True):
    assert trained.keys() == expected.keys()
    for name, value in expected.items():
        if exact:
            assert torch.equal(trained[name], value), f"{name} differs"
        else:
            torch.testing.assert_close(trained[name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_one_preference_a_step_is_the_published_loop_bit_for_bit(tiny_merging_problem):
    problem, model = _hypernet()
    reference = _reference(problem, copy.deepcopy(model), STEPS, 1, _ls)
    _assert_equal(_solve(problem, model, "ls"), reference)
    model = _router(tiny_merging_problem)
    reference = _reference(tiny_merging_problem, copy.deepcopy(model), STEPS, 1, _epo(2))
    _assert_equal(_solve(tiny_merging_problem, model, "epo"), reference)


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["ls", "epo"])
def test_k_preferences_a_step_average_the_k_updates(tiny_merging_problem, solver):
    hypernet = _hypernet()  # the vectorized path: one forward of the K preferences
    router = (tiny_merging_problem, _router(tiny_merging_problem))  # the default loop, one preference at a time
    for problem, model in (hypernet, router):
        reference = _reference(problem, copy.deepcopy(model), STEPS, 4, _ls if solver == "ls" else _epo(2))
        one_a_step = _solve(problem, copy.deepcopy(model), solver)
        assert max((reference[k] - one_a_step[k]).abs().max() for k in reference) > 1e-4  # K matters
        _assert_equal(_solve(problem, model, solver, prefs_per_step=4), reference, exact=False)


class _LoopedHypernet(HypernetworkPSL):
    """The hypernetwork through the interface's default loop (one forward per preference)."""

    preference_losses = ParetoSetModel.preference_losses


def test_the_hypernetworks_one_batched_forward_equals_the_loop():
    problem, model = _hypernet()
    prefs = torch.as_tensor(np.random.default_rng(0).dirichlet(np.ones(2), size=8), dtype=torch.float32)
    blocks = list(model.preference_losses(problem, prefs, None))
    assert len(blocks) == 1 and blocks[0].shape == (8, 2)
    for row, pref in zip(blocks[0], prefs, strict=True):
        torch.testing.assert_close(row, problem.objectives(model(pref)))
    looped = _LoopedHypernet(problem, hidden=16)
    looped.load_state_dict(model.state_dict())
    assert len(list(looped.preference_losses(problem, prefs, None))) == 8
    for solver in ("tchebycheff", "epo"):
        batched = solve(problem, copy.deepcopy(model), solver, steps=20, prefs_per_step=8, progress=False)
        loop = solve(problem, copy.deepcopy(looped), solver, steps=20, prefs_per_step=8, progress=False)
        _assert_equal(batched.model.trainable_state(), loop.model.trainable_state(), exact=False)
        np.testing.assert_allclose(batched.history["loss"], loop.history["loss"], rtol=1e-5)
        assert batched.history["loss"].shape == (20 * 8, 2)


def test_history_keeps_one_row_per_preference_in_the_order_drawn():
    problem, model = _hypernet()
    result = solve(problem, model, "ls", steps=3, prefs_per_step=5, seed=SEED, progress=False)
    expected = np.random.default_rng(SEED).dirichlet(np.ones(2), size=15)
    np.testing.assert_allclose(result.history["pref"], expected, rtol=1e-6)
    np.testing.assert_allclose(result.history["weight"], result.history["pref"])  # LS: w = r
    assert result.settings["prefs_per_step"] == 5 and result.settings["grad_clip"] is None


def test_gradient_clip_scales_the_step_gradient_to_the_given_norm():
    problem, model = _hypernet()
    reference = _reference(problem, copy.deepcopy(model), 3, 4, _ls, torch.optim.SGD, clip=0.05)
    clipped = _solve(problem, copy.deepcopy(model), "ls", steps=3, optimizer="sgd", prefs_per_step=4, grad_clip=0.05)
    _assert_equal(clipped, reference, exact=False)
    unclipped = _solve(problem, copy.deepcopy(model), "ls", steps=3, optimizer="sgd", prefs_per_step=4)
    assert max((clipped[k] - unclipped[k]).abs().max() for k in clipped) > 1e-4  # the clip was active
    _assert_equal(_solve(problem, model, "ls", steps=3, optimizer="sgd", prefs_per_step=4, grad_clip=1e9), unclipped)


@pytest.mark.parametrize(
    "option, message",
    [
        ({"prefs_per_step": 0}, r"prefs_per_step must be an integer >= 1, got 0"),
        ({"prefs_per_step": 2.0}, r"prefs_per_step must be an integer >= 1, got 2.0"),
        ({"prefs_per_step": True}, r"prefs_per_step must be an integer >= 1, got True"),
        ({"grad_clip": 0.0}, r"grad_clip must be > 0, got 0.0"),
        ({"grad_clip": float("inf")}, r"grad_clip must be > 0, got inf"),
        ({"grad_clip": float("nan")}, r"grad_clip must be > 0, got nan"),
    ],
)
def test_bad_prefs_per_step_and_grad_clip_are_refused(option, message):
    with pytest.raises(ValueError, match=message):
        solve("zdt1", steps=1, progress=False, **option)


def test_the_cli_passes_k_and_the_clip_and_refuses_bad_values(tmp_path, capsys):
    options = ["solve", "--problem", "zdt1", "--model-option", "hidden=8", "--steps", "3", "--quiet"]
    assert main([*options, "--prefs-per-step", "4", "--grad-clip", "0.5", "--out", str(tmp_path / "run")]) == 0
    loaded = ParetoSetResult.load(tmp_path / "run")
    assert loaded.settings["prefs_per_step"] == 4 and loaded.settings["grad_clip"] == 0.5
    assert loaded.history["loss"].shape == (12, 2)
    with pytest.raises(SystemExit) as exit_info:
        main([*options, "--prefs-per-step", "0", "--out", str(tmp_path / "bad")])
    assert (
        exit_info.value.code == 2
        and "argument --prefs-per-step: must be an integer >= 1, got 0" in capsys.readouterr().err
    )


def test_k_preferences_give_the_same_update_through_the_gram_path_as_the_summed_backward(tiny_merging_problem):
    plain = _solve(tiny_merging_problem, _router(tiny_merging_problem), LinearScalarization(), prefs_per_step=3)
    gram = _solve(tiny_merging_problem, _router(tiny_merging_problem), GramLS(), prefs_per_step=3)
    _assert_equal(plain, gram, exact=False)


def test_fixed_rays_are_trained_in_turn_across_the_k_preferences_of_each_step(tiny_merging_problem):
    result = solve(tiny_merging_problem, "per_ray", "ls", steps=2, prefs_per_step=2, progress=False,
                   model_kwargs={"rays": 3})  # fmt: skip
    np.testing.assert_allclose(result.history["pref"], [[0, 1], [0.5, 0.5], [1, 0], [0, 1]], atol=1e-7)


class _OneRowShort(HypernetworkPSL):
    def preference_losses(self, problem, prefs, batch):
        yield from super().preference_losses(problem, prefs[1:], batch)


def test_a_model_giving_the_wrong_number_of_rows_is_named():
    problem, model = _hypernet()
    short = _OneRowShort(problem, hidden=16)
    with pytest.raises(RuntimeError, match=r"_OneRowShort.preference_losses gave fewer than 3 rows"):
        solve(problem, short, "ls", steps=1, prefs_per_step=3, progress=False)
