"""The core works without any optional extra; an optional piece used without its extra names the install command.

No second virtual environment: a subprocess blocks the optional packages (None in sys.modules: importing one raises
ModuleNotFoundError and `importlib.util.find_spec` finds nothing, as in an interpreter without them).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mooframe.optional import EXTRAS, requires

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = ["transformers", "open_clip", "datasets", "peft", "cvxpy", "highspy", "osqp", "clarabel", "sklearn",
            "torchvision", "huggingface_hub"]  # fmt: skip

CORE_RUN = """
import importlib, sys

for name in OPTIONAL:  # as if not installed: `import name` raises ModuleNotFoundError, find_spec(name) is None
    sys.modules[name] = None

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

import mooframe
from mooframe import ParetoSetResult, solve
from mooframe.indicators import hypervolume
from mooframe.problems.merging import MergingProblem
from mooframe.registry import SOLVERS, build_solver

for problem in ("zdt1", "dtlz2"):
    front = solve(problem, steps=2, progress=False).front(n=5)
    assert np.isfinite(front.objectives).all(), problem
for name in SOLVERS:
    result = solve("vlmop2", solver=name, steps=2, progress=False)
result.save("run")
assert (ParetoSetResult.load("run").front(n=5).objectives == result.front(n=5).objectives).all()
assert abs(hypervolume(np.array([[0.0, 1.0], [1.0, 0.0]]), ref=[2.0, 2.0]).value - 3.0) < 1e-12

torch.manual_seed(0)
pretrained = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6))
experts = [{n: p.detach() + 0.1 * torch.randn_like(p) for n, p in pretrained.named_parameters()} for _ in range(2)]
data = [TensorDataset(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(2)]
problem = MergingProblem(pretrained, experts, [nn.Linear(6, 3) for _ in range(2)], data, batch_size=8)
for model in ("pwe_moe", "pareto_merging"):
    kwargs = {"upscale": [r"2"]} if model == "pwe_moe" else {}
    front = solve(problem, model=model, steps=2, progress=False, model_kwargs=kwargs).front(n=3)
    assert front.objectives.shape == (3, 2)

for piece, call in {
    "digits problem": lambda: solve("digits", steps=1),
    "HiGHS backend": lambda: build_solver("epo", backend="highs").weights(
        torch.ones(2), torch.tensor([0.5, 0.5]), torch.eye(2)),
    "open_clip adapter": lambda: importlib.import_module("mooframe.adapters.open_clip"),
    "GPT-2 problem": lambda: solve("gpt2_glue", steps=1),
}.items():
    try:
        call()
    except ModuleNotFoundError as error:
        print(piece, "|", error)
    else:
        raise AssertionError(f"{piece} ran without its extra")
assert not [m for m, module in sys.modules.items() if m.split(".")[0] in OPTIONAL and module is not None]
print("core ok")
"""


@pytest.mark.slow
def test_core_runs_without_optional_packages_and_optional_pieces_name_their_extra(tmp_path):
    script = f"OPTIONAL = {OPTIONAL!r}\n" + textwrap.dedent(CORE_RUN)
    finished = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    lines = dict(line.split(" | ") for line in finished.stdout.splitlines() if " | " in line)
    assert lines == {
        "digits problem": "sklearn is not installed: pip install 'mooframe[digits]' (" + EXTRAS["digits"] + ")",
        "HiGHS backend": "highspy is not installed: pip install 'mooframe[lp]' (" + EXTRAS["lp"] + ")",
        "open_clip adapter": "open_clip is not installed: pip install 'mooframe[clip]' (" + EXTRAS["clip"] + ")",
        "GPT-2 problem": "transformers is not installed: pip install 'mooframe[text]' (" + EXTRAS["text"] + ")",
    }
    assert finished.stdout.rstrip().endswith("core ok")


def test_requires_names_the_extra_and_leaves_other_errors_alone():
    with pytest.raises(ModuleNotFoundError, match=r"^no_such_pkg is not installed: pip install 'mooframe\[lp\]'"):
        with requires("lp"):
            import no_such_pkg  # noqa: F401
    with pytest.raises(ModuleNotFoundError, match="No module named 'mooframe.no_such_module'"):
        with requires("lp"):
            import mooframe.no_such_module  # noqa: F401  (a bug of mooframe's, not a missing extra)
    with pytest.raises(ValueError, match="pass names among clip, text, lp, digits"):
        with requires("gpu"):
            pass


def test_every_extra_named_in_code_is_declared_and_all_installs_them():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(extras) and set(extras) == set(EXTRAS) | {"all", "dev"}
    assert extras["all"] == [f"mooframe[{','.join(EXTRAS)}]"]
    assert "[all,dev]" in (ROOT / "Makefile").read_text()
