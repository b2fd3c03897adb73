"""Exporting the model at a preference: family formats loadable without mooframe, the card, safe writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, GPT2Config, GPT2Model

import mooframe.export
from mooframe import FunctionalModel, ParetoSetModel, ParetoSetResult, solve
from mooframe.adapters import Backbone
from mooframe.adapters.gpt2 import GPT2Backbone
from mooframe.adapters.hf_clip import HFCLIPVisionBackbone
from mooframe.cli import main
from mooframe.problems.merging import MergingProblem
from mooframe.solvers.ls import LinearScalarization

PREF = [0.3, 0.7]


class _TaskArithmeticSet(ParetoSetModel):
    """theta(r) = theta_0 + s * sum_t r_t tau_t, with the scale s the one trainable parameter."""

    def __init__(self, problem: MergingProblem) -> None:
        super().__init__(problem)
        self.backbone = [problem.pretrained]  # a list: not a submodule, so not part of this model's state
        self.theta0 = problem.pretrained_state()
        self.taus = [{k: s[k] - v for k, v in self.theta0.items()} for s in problem.expert_states]
        self.scale = nn.Parameter(torch.tensor(0.9))

    def forward(self, pref: torch.Tensor) -> FunctionalModel:
        params = {
            k: v + self.scale * sum(r * tau[k] for r, tau in zip(pref, self.taus, strict=True))
            for k, v in self.theta0.items()
        }
        return FunctionalModel(self.backbone[0], params)


def _merging_result(pretrained: Backbone, make_expert, inputs: torch.Tensor | dict, features: int) -> ParetoSetResult:
    """A two-task merging run over `pretrained`, experts perturbed from it, random labels and linear heads."""
    experts = []
    for seed in (1, 2):
        expert, generator = make_expert(), torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in expert.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
        experts.append(expert)
    torch.manual_seed(3)
    heads = [nn.Linear(features, 3) for _ in range(2)]
    n_examples = len(next(iter(inputs.values())) if isinstance(inputs, dict) else inputs)
    data = [_labelled(inputs, torch.randint(0, 3, (n_examples,))) for _ in range(2)]
    problem = MergingProblem(pretrained, experts, heads, data, task_names=["a", "b"], batch_size=4)
    return ParetoSetResult(problem, _TaskArithmeticSet(problem), LinearScalarization())


def _tiny_clip() -> CLIPVisionModel:
    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=8, patch_size=4
    )
    return CLIPVisionModel(config).eval()


def _labelled(inputs: torch.Tensor | dict, labels: torch.Tensor) -> list:
    """(inputs, label) pairs; dict inputs (token ids and mask) become one dict per example."""
    if isinstance(inputs, dict):
        return [({key: value[i] for key, value in inputs.items()}, labels[i]) for i in range(len(labels))]
    return list(zip(inputs, labels, strict=True))


def _tiny_gpt2() -> GPT2Model:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    return GPT2Model(config).eval()


_LOAD_WITHOUT_MOOFRAME = """
import sys
sys.modules["mooframe"] = None  # any import of mooframe now fails
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionModel, GPT2Model
inputs = load_file(sys.argv[3])
clip = CLIPVisionModel.from_pretrained(sys.argv[1]).eval()
gpt2 = GPT2Model.from_pretrained(sys.argv[2]).eval()
outputs = {
    "clip": clip(pixel_values=inputs["pixels"]).pooler_output,
    "gpt2": gpt2(input_ids=inputs["ids"], attention_mask=inputs["mask"]).last_hidden_state,
}
save_file({k: v.detach().contiguous() for k, v in outputs.items()}, sys.argv[4])
"""


@pytest.mark.slow  # a child process importing transformers: 8 s on a quiet 2-core machine, 25 s loaded
def test_exported_hf_models_load_with_plain_transformers_and_match_the_model_at_the_preference(tmp_path):
    torch.manual_seed(4)
    pixels, ids = torch.randn(6, 3, 8, 8), torch.randint(0, 50, (6, 5))
    clip = _merging_result(HFCLIPVisionBackbone(_tiny_clip()), lambda: HFCLIPVisionBackbone(_tiny_clip()), pixels, 16)
    mask = torch.ones_like(ids)
    mask[:2, -2:] = 0  # right padding: the backbone reads each sequence's last real token
    tokens = {"input_ids": ids, "attention_mask": mask}
    gpt2 = _merging_result(GPT2Backbone(_tiny_gpt2()), lambda: GPT2Backbone(_tiny_gpt2()), tokens, 16)
    clip.export(tmp_path / "clip", PREF)
    gpt2.export(tmp_path / "gpt2", PREF)
    save_file({"pixels": pixels, "ids": ids, "mask": mask}, str(tmp_path / "inputs.safetensors"))
    script = tmp_path / "load.py"
    script.write_text(_LOAD_WITHOUT_MOOFRAME)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    paths = [str(tmp_path / name) for name in ("clip", "gpt2", "inputs.safetensors", "outputs.safetensors")]
    subprocess.run([sys.executable, str(script), *paths], check=True, cwd=tmp_path, env=env, timeout=120)
    outputs = load_file(str(tmp_path / "outputs.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(outputs["clip"], clip.model_at(PREF)(pixels), rtol=0, atol=1e-5)
        last = torch.tensor([2, 2, 4, 4, 4, 4])  # last non-padding position of each sequence
        features = outputs["gpt2"][torch.arange(6), last]
        torch.testing.assert_close(features, gpt2.model_at(PREF)(ids, mask), rtol=0, atol=1e-5)
        assert not torch.allclose(outputs["clip"], clip.problem.pretrained(pixels), atol=1e-3)  # really merged

    card = json.loads((tmp_path / "clip" / mooframe.export.CARD_FILE).read_text())
    evaluation = clip.problem.evaluate(clip.model_at(PREF))
    assert card["family"] == "hf_clip" and card["preference"] == {"a": 0.3, "b": 0.7}
    assert card["metrics"]["accuracy"] == dict(zip("ab", evaluation.metrics["accuracy"].tolist(), strict=True))
    assert card["objectives"] == dict(zip("ab", evaluation.objectives.tolist(), strict=True))
    assert card["method"]["name"] == "_TaskArithmeticSet" and card["solver"] == {"name": "ls", "kwargs": {}}


def _tiny_plain_result(tiny_merging_problem: MergingProblem) -> ParetoSetResult:
    return ParetoSetResult(tiny_merging_problem, _TaskArithmeticSet(tiny_merging_problem), LinearScalarization())


def test_plain_torch_export_is_the_state_dict_in_safetensors(tmp_path, tiny_merging_problem):
    result = _tiny_plain_result(tiny_merging_problem)
    result.export(tmp_path / "plain", PREF, evaluate=False)
    module = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8))
    module.load_state_dict(load_file(str(tmp_path / "plain" / mooframe.export.SAFETENSORS_FILE)))
    inputs = torch.randn(5, 6)
    with torch.no_grad():
        torch.testing.assert_close(module(inputs), result.model_at(PREF)(inputs), rtol=0, atol=1e-6)
    card = json.loads((tmp_path / "plain" / mooframe.export.CARD_FILE).read_text())
    assert card["family"] == "torch" and card["objectives"] is None
    shared = (tmp_path / "plain").stat().st_mode & 0o666  # the umask's bits, not safetensors' own 0600
    assert all(f.stat().st_mode & 0o777 == shared for f in (tmp_path / "plain").iterdir())


def test_open_clip_export_loads_with_open_clip_load_checkpoint(tmp_path):
    import open_clip  # a required dependency (open_clip_torch): a broken install must fail here, not skip

    def tiny_open_clip() -> nn.Module:
        torch.manual_seed(0)
        vision = {"image_size": 8, "patch_size": 4, "width": 16, "layers": 1, "head_width": 8}
        text = {"context_length": 5, "vocab_size": 20, "width": 16, "heads": 2, "layers": 1}
        return open_clip.model.CLIP(embed_dim=8, vision_cfg=vision, text_cfg=text).eval()

    class OpenCLIPVisual(Backbone):
        family = "open_clip"

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.model(images)

    images = torch.randn(4, 3, 8, 8)
    result = _merging_result(
        OpenCLIPVisual(tiny_open_clip().visual), lambda: OpenCLIPVisual(tiny_open_clip().visual), images, 8
    )
    result.export(tmp_path / "oc", PREF, evaluate=False)
    fresh = tiny_open_clip()
    open_clip.load_checkpoint(fresh, str(tmp_path / "oc" / mooframe.export.OPEN_CLIP_FILE), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(fresh.encode_image(images), result.model_at(PREF)(images), rtol=0, atol=1e-6)


def _card_pref(path) -> dict:
    return json.loads((path / mooframe.export.CARD_FILE).read_text())["preference"]


def test_export_refuses_to_overwrite_without_force(tmp_path, tiny_merging_problem):
    result = _tiny_plain_result(tiny_merging_problem)
    target = result.export(tmp_path / "out", PREF, evaluate=False)
    with pytest.raises(ValueError, match="already exists; pass force=True"):
        result.export(target, [0.5, 0.5], evaluate=False)
    assert _card_pref(target) == {"a": 0.3, "b": 0.7}
    result.export(target, [0.5, 0.5], force=True, evaluate=False)
    assert _card_pref(target) == {"a": 0.5, "b": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_interrupted_export_leaves_no_partial_model(tmp_path, tiny_merging_problem, monkeypatch):
    result = _tiny_plain_result(tiny_merging_problem)
    previous = result.export(tmp_path / "previous", PREF, evaluate=False)

    def interrupted_save(tensors, filename, *args, **kwargs):
        with open(filename, "wb") as handle:
            handle.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(mooframe.export, "save_file", interrupted_save)
    for path, force in ((tmp_path / "new", False), (previous, True)):
        with pytest.raises(KeyboardInterrupt):
            result.export(path, [0.5, 0.5], force=force, evaluate=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["previous"]
    assert _card_pref(previous) == {"a": 0.3, "b": 0.7}  # the replaced export is untouched


def test_cli_export_by_preference_and_by_rule(tmp_path, capsys):
    run = solve("zdt1", steps=0, progress=False).save(tmp_path / "run")
    out = tmp_path / "x"
    assert main(["export", str(run), "--pref", "0.3,0.7", "--out", str(out)]) == 0
    solution = load_file(str(out / mooframe.export.SAFETENSORS_FILE))["solution"]
    torch.testing.assert_close(solution, ParetoSetResult.load(run).model_at(PREF))
    card = json.loads((out / mooframe.export.CARD_FILE).read_text())
    assert card["source_run"] == str(run.resolve()) and card["method"]["name"] == "hypernet"
    assert main(["export", str(run), "--pref", "0.5,0.5", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(run), "--select", "min f2", "--n", "5", "--out", str(out), "--force"]) == 0
    assert "chosen" in capsys.readouterr().out
    chosen = ParetoSetResult.load(run).select("min f2", n=5)
    assert _card_pref(out) == dict(zip(["f1", "f2"], chosen.pref.tolist(), strict=True))
    assert main(["export", str(run), "--select", "min f1 subject to f2 <= -1", "--out", str(tmp_path / "y")]) == 2
    assert "no evaluated preference meets" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_export_edge_cases_tensor_non_finite_unknown_type_and_foreign_keys(tmp_path):
    from mooframe.export import export_solution
    from mooframe.pareto_set import FunctionalModel

    point = torch.tensor([0.25, -1.5, 3.0])
    written = export_solution(point, tmp_path / "tensor", {"note": "x"})
    assert torch.equal(load_file(str(written / mooframe.export.SAFETENSORS_FILE))["solution"], point)
    card = json.loads((written / mooframe.export.CARD_FILE).read_text())
    assert card["family"] == "tensor" and card["note"] == "x" and "format" in card
    for bad in (torch.tensor([1.0, float("nan")]), nn.Linear(2, 2).requires_grad_(False).weight.fill_(float("inf"))):
        with pytest.raises(ValueError, match="non-finite parameters.*refusing to export it"):
            export_solution(bad, tmp_path / "bad", {})
    assert not (tmp_path / "bad").exists()  # nothing written, not even an empty folder
    module = nn.Linear(2, 1)
    with torch.no_grad():
        module.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"non-finite parameters \['bias'\]"):
        export_solution(module, tmp_path / "bad", {})
    with pytest.raises(ValueError, match="cannot export a solution of type str; export needs an nn.Module"):
        export_solution("weights", tmp_path / "bad", {})
    foreign = FunctionalModel(nn.Linear(2, 1), {"weight": torch.zeros(1, 2), "other.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"parameters \['other.weight'\] are not in its module"):
        export_solution(foreign, tmp_path / "foreign", {})
    assert not (tmp_path / "foreign").exists()
    # a FunctionalModel is written as a copy of its module holding its parameters; the module itself is left alone
    base = nn.Linear(2, 1)
    written = export_solution(FunctionalModel(base, {"weight": torch.ones(1, 2)}), tmp_path / "merged", {})
    merged = load_file(str(written / mooframe.export.SAFETENSORS_FILE))
    assert torch.equal(merged["weight"], torch.ones(1, 2)) and not torch.equal(base.weight, torch.ones(1, 2))
    assert torch.equal(merged["bias"], base.bias.detach())


def test_tied_weights_are_written_as_separate_tensors(tmp_path):
    from mooframe.export import export_solution

    tied = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False))
    tied[1].weight = tied[0].weight  # shared storage: safetensors refuses it unless copied apart
    written = export_solution(tied, tmp_path / "tied", {})
    state = load_file(str(written / mooframe.export.SAFETENSORS_FILE))
    assert set(state) == {"0.weight", "1.weight"} and torch.equal(state["0.weight"], state["1.weight"])
