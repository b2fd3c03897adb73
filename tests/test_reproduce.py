"""`mooframe reproduce`: the experiment files, the plan, and a smoke run end to end on an offline hub-like cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mooframe.reproduce import experiment_names, load_experiment, plan
from mooframe.reproduce.runner import reproduce
from tests.hub_cache import write_hub_dataset, write_hub_model
from tests.tiny_checkpoints import WORDS, random_images, write_gpt2, write_hf_clip

THREE = ["sun397", "stanford-cars", "dtd"]


def test_every_experiment_lists_the_papers_numbers_for_methods_it_runs():
    assert set(experiment_names()) == {"table2", "table3", "table4", "figure3", "figure4", "figure5b", "figure6"}
    for name in experiment_names():
        experiment = load_experiment(name)
        tasks = {t for task_set in experiment["task_sets"] for t in task_set}
        for entry in experiment["paper"]:
            assert entry["method"] in experiment["methods"], (name, entry)
            assert set(entry["accuracy"]) == tasks
        assert tasks <= set(experiment["paper_experts"]["tasks"])
    table2 = load_experiment("table2")
    averages = {e["row"]: np.mean(list(e["accuracy"].values())) for e in table2["paper"]}
    assert round(averages["Ours-LS (Attn+MLP)"], 1) == 83.5 and round(averages["Fisher Merging"], 1) == 68.3
    assert table2["methods"]["pwe_moe_ls_all"]["model_kwargs"]["upscale"] == "all"
    assert table2["methods"]["pwe_moe_epo_mlp"]["solver_kwargs"] == {"lp": "paper"}
    gpt2 = load_experiment("figure6")["methods"]["pwe_moe_ls_mlp"]
    assert gpt2["solve"]["optimizer"] == "adamw" and gpt2["batch_size"] == 8
    assert gpt2["model_kwargs"]["scaling"] == 0.6


def test_plan_selects_methods_and_names_unknown_ones():
    runs = plan("figure3", ["experts", "ties"])
    assert [(r.folder, r.method) for r in runs][:2] == [
        ("sun397+stanford-cars", "experts"),
        ("sun397+stanford-cars", "ties"),
    ]
    assert len(runs) == 6
    with pytest.raises(ValueError, match="no methods \\['nope'\\]"):
        plan("figure3", ["nope"])
    with pytest.raises(ValueError, match="unknown experiment"):
        load_experiment("table9")
    assert plan("table2", ["ls_full"], smoke=True)[0].spec["solve"]["steps"] == 2


def test_dry_run_lists_runs_and_writes_nothing(tmp_path):
    lines = []
    assert reproduce("table4", tmp_path / "out", dry_run=True, log=lines.append) is None
    assert not (tmp_path / "out").exists()
    assert any(
        "[to run]" in line and "pwe_moe_ls_mlp: train 4000 steps x 7 tasks x 8 examples" in line for line in lines
    )


def _hub_cache(root: Path) -> Path:
    """The tiny CLIP, its three FusionBench-named experts and the three image datasets, cached as from the hub."""
    import datasets

    hf_home = root / "hf"
    clip, experts = write_hf_clip(root / "models", len(THREE))
    write_hub_model(hf_home, "openai/clip-vit-base-patch32", clip)
    for task, expert in zip(THREE, experts, strict=True):
        write_hub_model(hf_home, f"tanganke/clip-vit-base-patch32_{task}", expert)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    hub_ids = {"sun397": "tanganke/sun397", "stanford-cars": "tanganke/stanford_cars", "dtd": "tanganke/dtd"}
    for t, hub_id in enumerate(hub_ids.values()):
        splits = {
            split: datasets.Dataset.from_dict(
                {"image": random_images(6, seed=10 * t + s), "label": [i % 3 for i in range(6)]}, features=features
            )
            for s, split in enumerate(("train", "test"))
        }
        write_hub_dataset(hf_home, hub_id, splits)
    return hf_home


@pytest.mark.slow
def test_reproduce_smoke_runs_end_to_end_offline_and_reports_the_papers_numbers(tmp_path):
    hf_home = _hub_cache(tmp_path)
    env = _offline(hf_home, tmp_path / "mooframe-cache")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "mooframe.cli", "reproduce", "figure5b", "--smoke", "--quiet", "--out", str(out)]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    report = (out / "report.md").read_text()
    # the paper's number, this run's and the difference, for a baseline, a trained method and a unit preference
    rows = (
        ("Weight Averaging", "70.1", None),
        ("Ours-LS (Attn+MLP, [0,1,0])", "69.1", [0, 1, 0]),
        ("MGDA", "68.9", None),
    )
    for row, paper, pref in rows:
        line = next(line for line in report.splitlines() if line.startswith(f"| {row} |"))
        cell = line.split("|")[2].strip()  # SUN397
        paper_value, run_value = cell.split(" (")[0].split(" / ")
        assert paper_value == paper
        recorded = json.loads((out / "+".join(THREE) / f"{_method(row)}.json").read_text())
        prefs = np.asarray(recorded["prefs"])
        target = np.full(3, 1 / 3) if pref is None else np.asarray(pref)
        index = int(np.abs(prefs - target).max(axis=1).argmin())
        assert run_value == f"{100 * recorded['accuracy'][index][0]:.1f}"
        assert f"({float(run_value) - float(paper):+.1f})" in cell and recorded["key"]["smoke"] is True
    assert "Experts on every task" in report and "75.3 / " in report  # Table 5's SUN397 expert on SUN397
    assert (out / "+".join(THREE) / "fronts" / "fronts.png").is_file()
    assert (out / "+".join(THREE) / "pwe_moe_ls_all" / "config.json").is_file()  # trained sets saved as runs
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("reused") == 12 and "running" not in second.stdout


def _method(row: str) -> str:
    return {"Weight Averaging": "weight_average", "MGDA": "mgda_full"}.get(row, "pwe_moe_ls_all")


def _offline(hf_home: Path, cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "MOOFRAME_CACHE": str(cache),
    }


@pytest.mark.slow
def test_reproduce_gpt2_pairs_offline_from_the_glue_cache(tmp_path):
    """Figure 6's three pairs with GPT-2: "gpt2", tanganke/gpt2_<task> and nyu-mll/glue's configurations."""
    import datasets

    hf_home = tmp_path / "hf"
    labels = {"cola": 2, "mnli": 3, "mrpc": 2}
    gpt2, experts = write_gpt2(tmp_path / "models", list(labels.values()))
    write_hub_model(hf_home, "gpt2", gpt2)
    columns = {"cola": ("sentence",), "mnli": ("premise", "hypothesis"), "mrpc": ("sentence1", "sentence2")}
    rng = np.random.default_rng(0)
    for (task, n_labels), expert in zip(labels.items(), experts, strict=True):
        write_hub_model(hf_home, f"tanganke/gpt2_{task}", expert)
        evaluation = "validation_matched" if task == "mnli" else "validation"
        splits = {}
        for split in ("train", evaluation):
            rows = {c: [" ".join(rng.choice(WORDS, 5)) for _ in range(6)] for c in columns[task]}
            splits[split] = datasets.Dataset.from_dict(
                {**rows, "label": [i % n_labels for i in range(6)], "idx": list(range(6))}
            )
        write_hub_dataset(hf_home, "nyu-mll/glue", splits, config=task)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "mooframe.cli", "reproduce", "figure6", "--smoke", "--quiet", "--out", str(out)]
    command += ["--methods", "experts,ties,pwe_moe_epo_mlp", "--problem-option", "max_length=16"]  # 32 positions
    result = subprocess.run(
        command, env=_offline(hf_home, tmp_path / "cache"), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = (out / "report.md").read_text()
    for pair in ("cola, mnli", "cola, mrpc", "mrpc, mnli"):
        assert f"## {pair}" in report
    assert "| cola | 76.8 / " in report  # Table 7: the CoLA expert on CoLA, beside this run's
    record = json.loads((out / "mrpc+mnli" / "pwe_moe_epo_mlp.json").read_text())
    assert record["key"]["spec"]["solver_kwargs"] == {"lp": "paper"} and len(record["prefs"]) == 3


@pytest.mark.slow  # a child process importing transformers: 8 s on a quiet 2-core machine, 25 s loaded
def test_reproduce_names_a_missing_checkpoint_in_one_line(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [sys.executable, "-m", "mooframe.cli", "reproduce", "figure6", "--smoke", "--quiet",
               "--methods", "experts", "--out", str(tmp_path / "out")]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "hf download gpt2" in result.stderr and "Traceback" not in result.stderr


def test_reproduce_never_replaces_files_it_did_not_write(tmp_path):
    from mooframe.reproduce import reproduce
    from mooframe.reproduce.runner import _write_json

    users = tmp_path / "sun397+dtd" / "experts.json"
    users.parent.mkdir()
    users.write_text('{"mine": 1}')
    with pytest.raises(ValueError, match="not written by mooframe reproduce"):
        _write_json(users, {"format": "mooframe-reproduce/1"})
    assert users.read_text() == '{"mine": 1}'
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("mine")
    with pytest.raises(ValueError, match=f"{notes} is a folder mooframe did not write .*thesis.tex"):
        reproduce("figure5b", out=notes, methods=["experts"], smoke=True, progress=False, log=lambda _: None)
    assert [p.name for p in notes.iterdir()] == ["thesis.tex"] and (notes / "thesis.tex").read_text() == "mine"
    record = tmp_path / "sun397+dtd" / "ties.json"
    _write_json(record, {"format": "mooframe-reproduce/1", "key": 1})
    _write_json(record, {"format": "mooframe-reproduce/1", "key": 2})  # its own record: replaced
    assert json.loads(record.read_text())["key"] == 2
