"""MergingProblem: expert checks, losses through a functional solution, evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mooframe.pareto_set import FunctionalModel
from mooframe.problems.merging import MergingProblem


def test_expert_with_a_mismatched_shape_is_named(tiny_merging_problem):
    problem = tiny_merging_problem
    bad = {k: v.clone() for k, v in problem.pretrained_state().items()}
    bad["2.weight"] = torch.zeros(8, 9)
    with pytest.raises(ValueError, match=r"task 'b'.*'2.weight'.*\(8, 9\)"):
        MergingProblem(
            problem.pretrained,
            [problem.expert_states[0], bad],
            problem.heads,
            problem.train_data,
            task_names=["a", "b"],
        )
    missing = {k: v for k, v in problem.pretrained_state().items() if k != "0.bias"}
    with pytest.raises(ValueError, match="no parameter '0.bias'"):
        MergingProblem(problem.pretrained, [missing, missing], problem.heads, problem.train_data)


def test_losses_through_a_functional_model_equal_the_module(tiny_merging_problem):
    problem = tiny_merging_problem
    batch = next(problem.batches(np.random.default_rng(0)))
    functional = FunctionalModel(problem.pretrained, problem.pretrained_state())
    torch.testing.assert_close(problem.losses(functional, batch), problem.losses(problem.pretrained, batch))
    inputs, labels = batch[0]
    expected = nn.functional.cross_entropy(problem.heads[0](problem.pretrained(inputs)), labels)
    torch.testing.assert_close(problem.losses(problem.pretrained, batch)[0], expected)


def test_evaluate_reports_accuracy_and_error(tiny_merging_problem):
    problem = tiny_merging_problem
    evaluation = problem.evaluate(problem.pretrained)
    inputs, labels = problem.test_data[1].tensors
    accuracy = (problem.heads[1](problem.pretrained(inputs)).argmax(-1) == labels).double().mean().item()
    assert evaluation.metrics["accuracy"][1] == pytest.approx(accuracy)
    np.testing.assert_allclose(evaluation.objectives, 1 - evaluation.metrics["accuracy"])
