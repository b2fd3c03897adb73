"""torch.distributed training: 2 gloo processes equal one process with the same global batch and seed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from toys import GramLS, RouterMerge

from mooframe import distributed
from mooframe.checkpoint import checkpoint_folders
from mooframe.result import ParetoSetResult
from mooframe.solve import solve
from mooframe.solvers.ls import LinearScalarization

STEPS, SEED = 8, 5


CASES = {  # model, solver, options: the LS path, the Gram path, PWE-MoE with EPO (Gram path, LPs), 3 prefs a step
    "ls": (RouterMerge, LinearScalarization, {}),
    "gram": (RouterMerge, GramLS, {}),
    "pwe_moe-epo": (lambda problem: "pwe_moe", lambda: "epo", {"model_kwargs": {"upscale": ["0", "2"]}}),
    "ls-3-prefs": (RouterMerge, LinearScalarization, {"prefs_per_step": 3}),  # every rank draws the same 3
    "gram-3-prefs": (RouterMerge, GramLS, {"prefs_per_step": 3}),
}


def _train(problem, case, steps=STEPS):
    model, solver, options = CASES[case]
    torch.manual_seed(0)
    result = solve(problem, model(problem), solver(), steps=steps, seed=SEED, progress=False, **options)
    return result.model.trainable_state()


def _rank_main(rank, world_size, init_file, problem, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    assert distributed.world_size() == world_size and distributed.rank() == rank
    for case in CASES:
        save_file(_train(problem, case), f"{out_dir}/{case}-{rank}.safetensors")
    distributed.shutdown()


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_with_the_same_global_batch(tiny_merging_problem, tmp_path):
    problem = tiny_merging_problem  # batch_size 8 per task: each rank trains on 4 examples of each task
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), problem, str(tmp_path)), nprocs=2, join=True)
    for case in CASES:
        single = _train(problem, case)
        ranks = [load_file(str(tmp_path / f"{case}-{rank}.safetensors")) for rank in range(2)]
        assert ranks[0].keys() == single.keys()
        for key, value in single.items():
            assert torch.equal(ranks[0][key], ranks[1][key]), f"{case}: ranks differ in {key}"
            torch.testing.assert_close(ranks[0][key], value, rtol=0, atol=1e-6, msg=f"{case}: {key}")
        untrained = _train(problem, case, steps=0)
        assert max((single[k] - untrained[k]).abs().max() for k in single) > 1e-3, f"{case}: training did nothing"


def test_each_rank_collates_only_its_share_of_the_global_batch(tiny_merging_problem, monkeypatch):
    global_batches = tiny_merging_problem.batches(np.random.default_rng(0))
    expected = [next(global_batches) for _ in range(3)]  # batch_size 8 per task
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    shares = []
    for index in range(2):
        monkeypatch.setattr(distributed, "rank", lambda index=index: index)
        stream = tiny_merging_problem.batches(np.random.default_rng(0))
        shares.append([next(stream) for _ in range(3)])
    for step, whole in enumerate(expected):
        for task, (inputs, labels) in enumerate(whole):
            parts = [share[step][task] for share in shares]
            assert all(len(part_labels) == len(labels) // 2 for _, part_labels in parts)
            torch.testing.assert_close(torch.cat([part_inputs for part_inputs, _ in parts]), inputs, rtol=0, atol=0)
            assert torch.cat([part_labels for _, part_labels in parts]).tolist() == labels.tolist()


def test_shard_splits_every_tensor_of_a_batch_into_contiguous_equal_parts():
    batch = [(torch.arange(8.0).reshape(4, 2), torch.arange(4)), ({"ids": torch.arange(4)}, torch.arange(4))]
    first, second = distributed._shard(batch, 0, 2), distributed._shard(batch, 1, 2)
    torch.testing.assert_close(torch.cat([first[0][0], second[0][0]]), batch[0][0])
    assert first[1][0]["ids"].tolist() == [0, 1] and second[1][1].tolist() == [2, 3]
    with pytest.raises(ValueError, match=r"shape \(4, 2\) cannot be split evenly over 3 ranks"):
        distributed._shard(batch, 0, 3)


@pytest.mark.slow
def test_mooframe_solve_under_torchrun_trains_on_both_ranks_and_only_rank_0_writes(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "mooframe.cli", "solve", "--problem", "zdt1", "--model-option", "hidden=8", "--steps", "6"]
    command += ["--checkpoint-every", "3", "--quiet", "--out", str(tmp_path / "run")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("saved run to") == 1
    assert [p.name for p in checkpoint_folders(tmp_path / "run-checkpoints")] == ["step-00000006"]
    loaded = ParetoSetResult.load(tmp_path / "run")
    assert loaded.settings["world_size"] == 2
    # zdt1 has no data: both ranks compute the same gradient, whose mean is exactly the one-process gradient
    single = solve("zdt1", steps=6, model_kwargs={"hidden": 8}, progress=False)
    for name, value in single.model.trainable_state().items():
        assert torch.equal(loaded.model.trainable_state()[name], value), name
