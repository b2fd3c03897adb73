"""The input pipeline: seeded order independent of workers, exact resume, decode-once evaluation."""

from __future__ import annotations

import itertools
import multiprocessing

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset, TensorDataset

from mooframe import data as pipeline
from mooframe import distributed
from mooframe.checkpoint import checkpoint_folders
from mooframe.problems.merging import MergingProblem
from mooframe.solve import solve

UPSCALE = {"upscale": [r"\d"]}  # both linear layers of the tiny backbone


class Decoded(Dataset):
    """Examples read one at a time, as images on disk are (no bulk path); counts every read, across workers."""

    def __init__(self, tensors: TensorDataset) -> None:
        self.inputs, self.labels = tensors.tensors
        self.reads = multiprocessing.get_context("fork").Value("i", 0)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with self.reads.get_lock():
            self.reads.value += 1
        return self.inputs[index].clone(), int(self.labels[index])


@pytest.fixture
def decoded_problem(tiny_merging_problem) -> MergingProblem:
    """The tiny merging problem with its data read example by example by 1 worker, test sets of 40 examples."""
    problem = tiny_merging_problem
    problem.train_data = [Decoded(d) for d in problem.train_data]
    problem.test_data = [Decoded(d) for d in problem.test_data]
    problem.eval_batch_size, problem.workers = 16, 1
    return problem


def _steps(stream, n):
    return [[(inputs.clone(), labels.clone()) for inputs, labels in step] for step in itertools.islice(stream, n)]


def _assert_same_steps(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        for (inputs_a, labels_a), (inputs_b, labels_b) in zip(a, b, strict=True):
            assert torch.equal(inputs_a, inputs_b) and torch.equal(labels_a, labels_b)


def test_worker_count_changes_neither_contents_nor_order(tiny_merging_problem):
    in_memory = tiny_merging_problem.train_data
    decoded = [Decoded(d) for d in in_memory]
    n = 12  # 2.4 epochs of 40 examples in batches of 8: crosses reshuffles
    reference = _steps(pipeline.TrainingBatches(in_memory, 8, np.random.default_rng(5)), n)
    for workers in (0, 1, 2):
        _assert_same_steps(
            _steps(pipeline.TrainingBatches(decoded, 8, np.random.default_rng(5), workers), n), reference
        )
    # independently: each task's batches of an epoch are a partition of its examples, drawn by the seed
    for task, data in enumerate(in_memory):
        epoch = torch.cat([step[task][1] for step in reference[:5]])
        assert sorted(torch.cat([step[task][0] for step in reference[:5]]).sum(1).tolist()) == sorted(
            data.tensors[0].sum(1).tolist()
        )
        assert epoch.bincount(minlength=3).tolist() == data.tensors[1].bincount(minlength=3).tolist()
    other_seed = _steps(pipeline.TrainingBatches(in_memory, 8, np.random.default_rng(6)), 1)
    assert not torch.equal(other_seed[0][0][0], reference[0][0][0])


def test_skip_resumes_exactly_and_loads_nothing(tiny_merging_problem):
    decoded = [Decoded(d) for d in tiny_merging_problem.train_data]
    whole = _steps(pipeline.TrainingBatches(decoded, 8, np.random.default_rng(1), workers=0), 9)
    reads = decoded[0].reads.value
    resumed = pipeline.resumed(pipeline.TrainingBatches(decoded, 8, np.random.default_rng(1), workers=2), 6)
    assert decoded[0].reads.value == reads  # skipping six steps read no example
    _assert_same_steps(_steps(resumed, 3), whole[6:])
    plain = pipeline.resumed(iter(range(10)), 4)  # a stream without skip() is read and dropped
    assert list(plain) == [4, 5, 6, 7, 8, 9]


def test_resume_with_workers_equals_an_uninterrupted_run(decoded_problem, tmp_path, monkeypatch):
    run = {"model": "pwe_moe", "solver": "ls", "steps": 4, "progress": False, "seed": 3, "model_kwargs": UPSCALE}
    whole = solve(decoded_problem, **run)
    losses, calls = decoded_problem.losses, []

    def killed_at_step_3(solution, batch):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("process killed")
        return losses(solution, batch)

    monkeypatch.setattr(decoded_problem, "losses", killed_at_step_3)
    with pytest.raises(RuntimeError, match="process killed"):
        solve(decoded_problem, **run, checkpoint_dir=tmp_path, checkpoint_every=2)
    monkeypatch.undo()
    assert [folder.name for folder in checkpoint_folders(tmp_path)] == ["step-00000002"]
    resumed = solve(decoded_problem, **run, resume=tmp_path)
    assert resumed.model.trainable_state().keys() == whole.model.trainable_state().keys()
    for name, value in whole.model.trainable_state().items():
        assert torch.equal(resumed.model.trainable_state()[name], value), name
    assert np.array_equal(resumed.history["loss"], whole.history["loss"])


def test_ranks_share_each_global_batch_on_the_loader_path(tiny_merging_problem, monkeypatch):
    decoded = [Decoded(d) for d in tiny_merging_problem.train_data]
    whole = _steps(pipeline.TrainingBatches(decoded, 8, np.random.default_rng(0), workers=0), 2)
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    shares = []
    for index in range(2):
        monkeypatch.setattr(distributed, "rank", lambda index=index: index)
        shares.append(_steps(pipeline.TrainingBatches(decoded, 8, np.random.default_rng(0), workers=1), 2))
    for step in range(2):
        for task in range(2):
            inputs = torch.cat([share[step][task][0] for share in shares])
            assert inputs.shape[0] == 8 and torch.equal(inputs, whole[step][task][0])


def test_in_memory_subsets_are_indexed_in_bulk(tiny_merging_problem):
    data = tiny_merging_problem.train_data[0]
    subset = Subset(data, list(range(10, 30)))
    assert pipeline.is_in_memory(subset) and not pipeline.is_in_memory(Decoded(data))
    batch = pipeline.take(subset, torch.tensor([0, 5, 19]))
    assert torch.equal(batch[0], data.tensors[0][[10, 15, 29]])


def test_ordered_batches_with_workers_read_each_example_once_in_order(tiny_merging_problem):
    first = Decoded(tiny_merging_problem.test_data[0])
    second = Decoded(TensorDataset(*(t[:20] for t in tiny_merging_problem.test_data[1].tensors)))
    batches = list(pipeline.ordered_batches([first, second], 16, workers=2))
    assert [(task, len(labels)) for task, (_, labels) in batches] == [(0, 16), (0, 16), (0, 8), (1, 16), (1, 4)]
    assert torch.equal(torch.cat([inputs for task, (inputs, _) in batches if task == 0]), first.inputs)
    assert torch.equal(torch.cat([inputs for task, (inputs, _) in batches if task == 1]), second.inputs)
    assert first.reads.value == 40 and second.reads.value == 20
    in_memory = list(pipeline.ordered_batches(tiny_merging_problem.test_data, 16))
    assert [(task, len(labels)) for task, (_, labels) in in_memory] == [
        (0, 16),
        (0, 16),
        (0, 8),
        (1, 16),
        (1, 16),
        (1, 8),
    ]


def test_default_workers(tiny_merging_problem, monkeypatch):
    in_memory = tiny_merging_problem.train_data
    assert pipeline.default_workers(in_memory) == 0
    monkeypatch.setattr(pipeline, "available_cores", lambda: 16)
    monkeypatch.delenv("MOOFRAME_WORKERS", raising=False)
    decoded = [Decoded(d) for d in in_memory]
    assert pipeline.default_workers(decoded) == 8 and pipeline.default_workers(decoded, batches=3) == 3
    monkeypatch.setattr(pipeline, "available_cores", lambda: 2)
    assert pipeline.default_workers(decoded) == 1
    monkeypatch.setenv("MOOFRAME_WORKERS", "5")
    assert pipeline.default_workers(decoded) == 5
    monkeypatch.setenv("MOOFRAME_WORKERS", "many")
    with pytest.raises(ValueError, match="MOOFRAME_WORKERS='many' is not a number"):
        pipeline.default_workers(decoded)
    with pytest.raises(ValueError, match="workers must be a number of processes >= 0"):
        pipeline.TrainingBatches(decoded, 8, np.random.default_rng(0), workers=-1)


def _reference_accuracy(problem, solution, task):
    """Accuracy of `solution` on task `task`'s test set, one example at a time (no batching, no pipeline)."""
    data = problem.test_data[task]
    hits = 0
    with torch.no_grad():
        for i in range(len(data)):
            inputs, label = data[i]
            hits += int(problem.heads[task](solution(inputs[None])).argmax(-1).item() == label)
    return hits / len(data)


@pytest.mark.slow
def test_k_at_a_time_evaluation_equals_one_at_a_time_exactly_and_decodes_once(decoded_problem):
    result = solve(decoded_problem, model="task_arithmetic", solver="ls", steps=0, progress=False)
    prefs = np.array([[1.0, 0.0], [0.7, 0.3], [0.5, 0.5], [0.2, 0.8], [0.0, 1.0]])
    reads = [data.reads.value for data in decoded_problem.test_data]
    together = result.front(prefs)  # all five models per pass
    assert [d.reads.value - r for d, r in zip(decoded_problem.test_data, reads, strict=True)] == [40, 40]
    one_by_one = result.front(prefs, chunk=1)
    pairs = result.front(prefs, chunk=2)
    for other in (one_by_one, pairs):
        assert np.array_equal(other.objectives, together.objectives)
        for name, values in together.metrics.items():
            assert np.array_equal(other.metrics[name], values), name
    assert len(np.unique(together.objectives[:, 0])) > 1  # the preferences give different models
    for row in (0, 2, 4):
        solution = result.model_at(prefs[row])
        for task in range(2):
            assert together.metrics["accuracy"][row, task] == pytest.approx(
                _reference_accuracy(decoded_problem, solution, task), abs=1e-12
            )
    solution = result.model_at(prefs[1])
    inputs, labels = decoded_problem.test_data[1].inputs, decoded_problem.test_data[1].labels
    with torch.no_grad():
        loss = F.cross_entropy(decoded_problem.heads[1](solution(inputs)), labels).item()
    assert together.metrics["loss"][1, 1] == pytest.approx(loss, rel=1e-5)


def test_evaluation_options_are_checked(decoded_problem):
    result = solve(decoded_problem, model="task_arithmetic", solver="ls", steps=0, progress=False)
    with pytest.raises(ValueError, match="chunk must be a number of preferences >= 1"):
        result.front(n=3, chunk=0)
    decoded_problem.eval_autocast = "int8"
    with pytest.raises(ValueError, match="eval_autocast must be None, 'bfloat16' or 'float16'"):
        result.front(n=3)


def test_solutions_per_pass_fits_the_free_memory(monkeypatch):
    assert 0 < pipeline.free_memory(torch.device("cpu")) < 2**50
    module = torch.nn.Linear(1000, 1000)  # 4,004,000 bytes of float32
    monkeypatch.setattr(pipeline, "free_memory", lambda device: 10 * 4_004_000)
    assert pipeline.solutions_per_pass(module, 11, torch.device("cpu")) == 5  # half of 10 models' worth
    assert pipeline.solutions_per_pass(module, 3, torch.device("cpu")) == 3
    monkeypatch.setattr(pipeline, "free_memory", lambda device: 1000)
    assert pipeline.solutions_per_pass(module, 11, torch.device("cpu")) == 1
