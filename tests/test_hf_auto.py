"""Any transformers model: causal LMs (Llama, Qwen2) with full and LoRA experts, sequence classifiers (BERT, Llama),
an image classifier (ViT); structure presets, training with LS and EPO, evaluation, export through from_pretrained."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from mooframe.adapters import hf_auto
from mooframe.export import export_solution
from mooframe.merging.store import LowRankExpert
from mooframe.pareto_set import FunctionalModel
from mooframe.problems.lm import IGNORE, CausalLMTasks
from mooframe.problems.sequence_classification import SequenceClassificationTasks
from mooframe.solve import solve
from tests.tiny_transformers import (
    decoder_config,
    write_causal_lms,
    write_classifiers,
    write_prompt_answers,
    write_sentences,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def lm_problems(tmp_path_factory):
    """family -> a two-task CausalLMTasks (one full expert, one LoRA adapter), each built once."""
    built = {}

    def build(family: str) -> CausalLMTasks:
        if family not in built:
            root = tmp_path_factory.mktemp(f"lm-{family}")
            base, experts = write_causal_lms(root, family, n_full=1, n_lora=1)
            data = write_prompt_answers(root, 2)
            built[family] = CausalLMTasks(base, experts, data, tasks=["full", "lora"], batch_size=4)
        return built[family]

    return build


@pytest.fixture(params=["llama", "qwen2"])
def lm_problem(request, lm_problems):
    return lm_problems(request.param)


def test_causal_lm_experts_load_full_and_lora_exactly(lm_problem, tmp_path):
    full, lora = lm_problem.expert_states
    assert isinstance(lm_problem.expert_states[1].factors("model.model.layers.0.self_attn.q_proj.weight"), tuple)
    # the LoRA expert differs from the base exactly in the adapted weights
    theta_0 = lm_problem.pretrained_state()
    changed = {name for name in theta_0 if not torch.equal(lora[name], theta_0[name])}
    assert changed == {f"model.model.layers.{i}.{m}.weight" for i in range(2)
                       for m in ("self_attn.q_proj", "self_attn.v_proj", "mlp.up_proj")}  # fmt: skip
    assert all(not torch.equal(full[name], theta_0[name]) for name in theta_0 if "norm" not in name)


def test_lora_expert_equals_peft_merged_model(tmp_path):
    from peft import PeftModel

    base, experts = write_causal_lms(tmp_path, "llama", n_full=0, n_lora=1)
    loaded = hf_auto.load("causal_lm", base, experts)
    assert isinstance(loaded.experts[0], LowRankExpert)
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), experts[0]).merge_and_unload()
    ids = torch.tensor([[3, 4, 5, 13, 6]])
    backbone = loaded.backbone
    theta = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    for name, (b, a) in loaded.experts[0].factors.items():
        theta[name] = theta[name] + b @ a
    ours = FunctionalModel(backbone, theta)(ids, torch.ones_like(ids))
    torch.testing.assert_close(ours, merged(ids).logits, atol=1e-5, rtol=1e-5)


def test_training_loss_is_answer_token_cross_entropy(lm_problem):
    """Against transformers' own loss (labels = the answer tokens, position ids of the unpadded prompt)."""
    batch = next(iter(lm_problem.batches(np.random.default_rng(0))))
    losses = lm_problem.losses(lm_problem.pretrained, batch)
    model = lm_problem.pretrained.model
    for task, (inputs, labels) in enumerate(batch):
        positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        reference = model(**inputs, position_ids=positions, labels=labels).loss
        torch.testing.assert_close(losses[task], reference, atol=1e-5, rtol=1e-5)
        assert (labels[:, -1] == 1).all() and (labels == IGNORE).any()  # answers end in [EOS], prompts are masked


@pytest.mark.parametrize(
    ("family", "model", "solver"),
    [("llama", "pwe_moe", "ls"), ("llama", "pwe_moe", "epo"), ("llama", "pareto_merging", "ls"),
     ("qwen2", "pareto_merging", "epo")],
)  # fmt: skip
def test_merging_models_train_and_evaluate_on_causal_lm(lm_problems, family, model, solver):
    lm_problem = lm_problems(family)
    kwargs = {"upscale": "attention_mlp"} if model == "pwe_moe" else {"rank": 2, "layers": "mlp"}
    untrained = solve(lm_problem, model=model, solver=solver, steps=0, progress=False, model_kwargs=kwargs)
    result = solve(lm_problem, model=model, solver=solver, steps=3, lr=1e-2, progress=False, model_kwargs=kwargs)
    moved = [not torch.equal(a, b) for a, b in zip(untrained.model.trainable_state().values(),
                                                    result.model.trainable_state().values(), strict=True)]  # fmt: skip
    assert any(moved)  # the steps trained the routers / low-rank tensors
    evaluation = lm_problem.evaluate(result.model_at([0.5, 0.5]))
    assert set(evaluation.metrics) == {"accuracy", "token_accuracy", "loss"}
    assert all(v.shape == (2,) for v in evaluation.metrics.values())
    assert np.all((0 <= evaluation.metrics["accuracy"]) & (evaluation.metrics["accuracy"] <= 1))
    np.testing.assert_allclose(evaluation.objectives, 1 - evaluation.metrics["accuracy"])
    assert np.all(np.isfinite(evaluation.metrics["loss"])) and np.all(evaluation.metrics["loss"] > 0)


def test_export_round_trips_through_from_pretrained(lm_problem, tmp_path):
    result = solve(lm_problem, model="pwe_moe", solver="ls", steps=2, progress=False)
    solution = result.model_at([0.3, 0.7])
    path = export_solution(solution, tmp_path / "export", card={"note": "test"})
    loaded = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokens = tokenizer(["3 1 4 =", "9 ="], padding=True, return_tensors="pt")
    positions = (tokens["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    theirs = loaded(**tokens, position_ids=positions).logits
    ours = solution(tokens["input_ids"], tokens["attention_mask"])
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ours, lm_problem.pretrained(tokens["input_ids"], tokens["attention_mask"]))


def test_structure_presets_name_each_block_of_a_real_size_qwen2():
    with torch.device("meta"):
        config = decoder_config("qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
        backbone = hf_auto.CausalLMBackbone(AutoModelForCausalLM.from_config(config))
    presets = hf_auto.structure_presets(backbone)
    names = [name for name, _ in backbone.named_modules()]

    def matched(preset: str) -> set[str]:
        return {n for n in names if any(re.fullmatch(p, n) for p in presets[preset])}

    blocks = [f"model.model.layers.{i}" for i in range(24)]
    assert matched("mlp") == {f"{b}.mlp" for b in blocks}
    assert matched("attention_mlp") == {f"{b}.{m}" for b in blocks for m in ("mlp", "self_attn")}
    norms = {f"{b}.{m}" for b in blocks for m in ("input_layernorm", "post_attention_layernorm")}
    # tied output head: its weight is the embedding's, so it is not a module of its own to up-scale
    assert matched("all") == matched("attention_mlp") | norms | {"model.model.embed_tokens", "model.model.norm"}
    assert matched("attention_mlp_embeddings") == matched("attention_mlp") | {"model.model.embed_tokens"}


def test_an_untied_output_head_is_up_scaled_with_the_embeddings():
    with torch.device("meta"):
        config = decoder_config("llama", tie_word_embeddings=False)
        backbone = hf_auto.CausalLMBackbone(AutoModelForCausalLM.from_config(config))
    presets = hf_auto.structure_presets(backbone)
    outside = {n for n, _ in backbone.named_modules() if n and not n.startswith("model.model.layers")}
    matched = {n for n in outside if any(re.fullmatch(p, n) for p in presets["attention_mlp_embeddings"])}
    assert matched == {"model.model.embed_tokens", "model.lm_head"}  # not the final norm


def test_bert_presets_take_intermediate_and_output_as_the_mlp(tmp_path):
    base, experts = write_classifiers(tmp_path, "bert", [2])
    backbone = hf_auto.load("sequence_classification", base, experts).backbone
    presets = hf_auto.structure_presets(backbone)
    names = [name for name, _ in backbone.named_modules()]
    mlp = {n for n in names if any(re.fullmatch(p, n) for p in presets["mlp"])}
    assert mlp == {f"model.encoder.layer.{i}.{m}" for i in range(2) for m in ("intermediate", "output")}


def test_unmatched_pattern_lists_the_module_names(lm_problems):
    lm_problem = lm_problems("llama")
    with pytest.raises(ValueError, match=re.escape("model.model.layers.<i>.mlp.up_proj")):
        solve(lm_problem, model="pwe_moe", steps=1, progress=False, model_kwargs={"upscale": ["model\\.h\\.\\d+"]})


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_classifier_split_reproduces_each_experts_logits(tmp_path, family):
    base, experts = write_classifiers(tmp_path, family, [2, 3])
    loaded = hf_auto.load("sequence_classification", base, experts)
    assert loaded.backbone.pooling == {"bert": "pooler", "llama": "last_token"}[family]
    tokens = loaded.tokenizer(["good movie", "a b c is bad"], padding=True, return_tensors="pt")
    for source, state, head in zip(experts, loaded.experts, loaded.heads, strict=True):
        reference = AutoModelForSequenceClassification.from_pretrained(source).eval()(**tokens).logits
        ours = head(FunctionalModel(loaded.backbone, state)(**tokens))
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["bert", "mistral"])
def test_sequence_classification_problem_trains_evaluates_exports(tmp_path, family):
    labels = [2, 3]
    base, experts = write_classifiers(tmp_path, family, labels)
    problem = SequenceClassificationTasks(base, experts, write_sentences(tmp_path, labels), max_length=8, batch_size=4)
    for solver in ("ls", "epo"):
        result = solve(problem, model="pwe_moe", solver=solver, steps=2, progress=False)
    evaluation = problem.evaluate(result.model_at([0.5, 0.5]))
    np.testing.assert_allclose(evaluation.objectives, 1 - evaluation.metrics["accuracy"])
    # expert t on its own task scores as the expert itself does (its own head, computed independently)
    inputs, target = problem.test_data[1][:]
    reference = AutoModelForSequenceClassification.from_pretrained(experts[1]).eval()(**inputs).logits
    accuracy = (reference.argmax(-1) == target).double().mean().item()
    assert problem.evaluate(FunctionalModel(problem.pretrained, problem.expert_states[1])).metrics["accuracy"][
        1
    ] == pytest.approx(accuracy)
    solution = result.model_at([0.2, 0.8])
    path = export_solution(solution, tmp_path / "export", card={})
    body = AutoModel.from_pretrained(path).eval()
    output = body(**inputs)
    pooled = output.pooler_output if family == "bert" else output.last_hidden_state[:, -1]
    if family != "bert":  # last non-padding token
        last = (torch.arange(inputs["input_ids"].shape[1]) * inputs["attention_mask"]).argmax(-1)
        pooled = output.last_hidden_state[torch.arange(len(last)), last]
    torch.testing.assert_close(pooled, solution(**inputs), atol=1e-5, rtol=1e-5)


def test_image_classifier_split_reads_the_first_token(tmp_path):
    from transformers import AutoModelForImageClassification, ViTConfig, ViTModel

    config = ViTConfig(image_size=8, patch_size=4, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=2, num_labels=3)  # fmt: skip
    torch.manual_seed(0)
    ViTModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "base")
    AutoModelForImageClassification.from_config(config).save_pretrained(tmp_path / "expert")
    loaded = hf_auto.load("image_classification", str(tmp_path / "base"), [str(tmp_path / "expert")])
    assert loaded.backbone.pooling == "first_token" and loaded.tokenizer is None
    pixels = torch.randn(2, 3, 8, 8)
    reference = AutoModelForImageClassification.from_pretrained(tmp_path / "expert").eval()(pixel_values=pixels)
    ours = loaded.heads[0](FunctionalModel(loaded.backbone, loaded.experts[0])(pixel_values=pixels))
    torch.testing.assert_close(ours, reference.logits, atol=1e-5, rtol=1e-5)
    presets = hf_auto.structure_presets(loaded.backbone)
    stack = next(iter(hf_auto.block_stacks(loaded.backbone)))  # model.layers in transformers 5, encoder.layer in 4
    mlp = [n for n, _ in loaded.backbone.named_modules() if any(re.fullmatch(p, n) for p in presets["mlp"])]
    assert len(mlp) == 2 and all(n.startswith(f"{stack}.") and re.search("mlp|intermediate|output", n) for n in mlp)


def test_bfloat16_frozen_parts_give_close_losses(tmp_path):
    base, experts = write_causal_lms(tmp_path, "llama", n_full=1, n_lora=0)
    data = write_prompt_answers(tmp_path, 1)
    exact = CausalLMTasks(base, experts, data, batch_size=4)
    half = CausalLMTasks(base, experts, data, batch_size=4, precision="bfloat16")
    assert half.pretrained.model.model.embed_tokens.weight.dtype == torch.bfloat16
    batch = next(iter(exact.batches(np.random.default_rng(0))))
    a, b = exact.losses(exact.pretrained, batch), half.losses(half.pretrained, batch)
    assert b.dtype == torch.float32
    torch.testing.assert_close(a, b, atol=0.05, rtol=0.02)


def test_bad_sources_say_what_to_pass(tmp_path):
    base, experts = write_causal_lms(tmp_path, "llama", n_full=1, n_lora=0)
    with pytest.raises(FileNotFoundError, match="not a local folder and not in the Hugging Face cache"):
        hf_auto.load("causal_lm", base, ["nobody/missing-expert"])
    with pytest.raises(ValueError, match="unknown model kind"):
        hf_auto.load("seq2seq", base, experts)
    with pytest.raises(ValueError, match=re.escape("put {split} in its name")):
        CausalLMTasks(base, experts, [str(tmp_path / "rows.jsonl")])


def test_multiple_choice_picks_the_most_likely_choice(tmp_path):
    import json

    base, experts = write_causal_lms(tmp_path, "llama", n_full=1, n_lora=0)
    rows = [{"prompt": f"{i} =", "choices": ["a b", "c", "good movie"], "answer": i % 3} for i in range(6)]
    for split in ("train", "test"):
        (tmp_path / f"mc-{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    problem = CausalLMTasks(base, experts, [str(tmp_path / "mc-{split}.jsonl")], choices_column="choices")
    expert = problem.expert_states[0]
    accuracy = problem.evaluate(FunctionalModel(problem.pretrained, expert)).metrics["accuracy"][0]
    # independently: the total log-probability of each choice after its prompt, from transformers' logits
    model = AutoModelForCausalLM.from_pretrained(experts[0]).eval()
    tokenizer = AutoTokenizer.from_pretrained(base)
    correct = 0
    for row in rows:
        scores = []
        for choice in row["choices"]:
            prompt = tokenizer(row["prompt"])["input_ids"]
            answer = tokenizer(choice, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            ids = torch.tensor([prompt + answer])
            log_probs = F.log_softmax(model(ids).logits[0, :-1], -1)
            scores.append(sum(log_probs[len(prompt) - 1 + i, tok].item() for i, tok in enumerate(answer)))
        correct += int(np.argmax(scores) == row["answer"])
    assert accuracy == pytest.approx(correct / len(rows))


def test_tied_output_head_merges_with_its_embedding(tmp_path):
    """RegMean and Pareto Merging on every linear layer skip the tied head; the export keeps the tie."""
    base, experts = write_causal_lms(tmp_path, "llama", n_full=2, n_lora=0, tie_word_embeddings=True)
    problem = CausalLMTasks(base, experts, write_prompt_answers(tmp_path, 2), batch_size=4)
    assert "model.lm_head.weight" not in problem.pretrained_state()
    regmean = solve(problem, model="regmean", steps=0, progress=False).model_at([0.5, 0.5])
    merged = solve(problem, model="pareto_merging", solver="ls", steps=2, progress=False,
                   model_kwargs={"layers": "all", "rank": 2}).model_at([0.5, 0.5])  # fmt: skip
    for solution in (regmean, merged):
        assert solution.model.lm_head.weight is solution.model.model.embed_tokens.weight
    expected = sum(s["model.model.embed_tokens.weight"] for s in problem.expert_states) / 2
    torch.testing.assert_close(regmean.model.lm_head.weight, expected)  # averaged, as RegMean does non-linear layers
    path = export_solution(merged, tmp_path / "export", card={})
    loaded = AutoModelForCausalLM.from_pretrained(path)
    torch.testing.assert_close(loaded.lm_head.weight, merged.model.model.embed_tokens.weight)
