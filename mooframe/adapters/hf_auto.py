"""Any Hugging Face transformers model whose experts share one base, through the Auto classes.

Three kinds of model (`KINDS`): "causal_lm" (AutoModelForCausalLM: Llama, Qwen2, Mistral, GPT-2, ...),
"sequence_classification" and "image_classification" (AutoModelFor...Classification: BERT, RoBERTa, ViT, decoders
with a `score` head, ...). Experts are full checkpoints, or (causal LM) PEFT LoRA adapters on the base, read from
local folders or the Hugging Face cache, never downloaded.

- A causal LM is one backbone, the whole model (its output head included, so that tied embeddings merge once):
  (input_ids, attention_mask) -> next-token logits.
- A classifier is split into its body (`model.base_model`, merged) and its head (everything else, one per
  expert, frozen). Which features the head reads (the last non-padding token, the pooler output, the first token or
  the whole sequence) is found by probing: the pooling whose features the head maps to the classifier's own logits
  on a random input. A classifier no pooling reproduces is refused.

Up-scalable modules are named from the model's structure (`structure_presets`): the repeated blocks (an
`nn.ModuleList` of layers with an attention child), and in each block its attention children, its norm children
and the rest (the MLP: `mlp`, `feed_forward`, or BERT's `intermediate` + `output`).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mooframe.adapters import Backbone
from mooframe.adapters.hub import from_pretrained_offline
from mooframe.adapters.peft import load_lora_experts
from mooframe.merging.store import LowRankExpert
from mooframe.optional import requires

with requires("text"):
    from transformers import (
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForImageClassification,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        PreTrainedModel,
        PreTrainedTokenizerBase,
    )

KINDS: dict[str, Any] = {
    "causal_lm": AutoModelForCausalLM,
    "sequence_classification": AutoModelForSequenceClassification,
    "image_classification": AutoModelForImageClassification,
}
#: Feature poolings a classifier's head may read, tried in this order (`split_classifier`).
POOLINGS = ("last_token", "pooler", "first_token", "sequence")
PRESET_NAMES = ("mlp", "attention_mlp", "attention_mlp_embeddings", "all")


class CausalLMBackbone(Backbone):
    """(input_ids, attention_mask) -> next-token logits of the wrapped causal LM, shape (B, L or keep, V).

    Position ids count only the non-padding tokens (as `generate` does), so a left-padded prompt is read as it is
    read unpadded. `logits_to_keep` > 0 computes the output head on the last positions only (transformers'
    own argument): a (B, L, V) tensor is never formed when only the answers' positions are scored.
    """

    family = "hf_auto"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None) -> None:
        super().__init__(model)
        self.tokenizer = tokenizer  # exported beside the weights
        self._keeps = "logits_to_keep" in inspect.signature(model.forward).parameters

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int = 0) -> torch.Tensor:
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        kwargs = {"logits_to_keep": logits_to_keep} if self._keeps else {}
        logits = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False, **kwargs
        ).logits
        return logits if self._keeps or not logits_to_keep else logits[:, -logits_to_keep:]


class PooledBackbone(Backbone):
    """The body of a classifier: its inputs (tokens or pixel_values) -> the features its head reads (`pooling`)."""

    family = "hf_auto"

    def __init__(self, model: PreTrainedModel, pooling: str, tokenizer: Any | None = None) -> None:
        super().__init__(model)
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; pass one of {', '.join(POOLINGS)}")
        self.pooling, self.tokenizer = pooling, tokenizer

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        output = self.model(**inputs)
        if self.pooling == "pooler":
            return output.pooler_output
        hidden = output.last_hidden_state
        if self.pooling == "first_token":
            return hidden[:, 0]
        if self.pooling == "sequence":
            return hidden
        mask = inputs.get("attention_mask")
        if mask is None:
            return hidden[:, -1]
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        last = (positions * mask).argmax(-1)  # left or right padding
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


@dataclass
class LoadedModels:
    """A base model and its T experts as a `MergingProblem` takes them: backbone, experts, heads (one per task)."""

    backbone: Backbone
    experts: list[dict[str, torch.Tensor] | LowRankExpert]
    heads: list[nn.Module]
    tokenizer: Any | None


def load(kind: str, base: str, experts: Sequence[str], tokenizer: bool = True) -> LoadedModels:
    """The base model at `base` and one expert per entry of `experts` (folders or hub ids in the cache).

    An expert folder holding `adapter_config.json` is a PEFT LoRA adapter on the base (causal LM only), held
    exactly as low-rank factors; any other is a full checkpoint of the same architecture.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; pass one of {', '.join(KINDS)}")
    if not experts:
        raise ValueError("pass at least one expert checkpoint")
    processor = load_tokenizer(base) if tokenizer and kind != "image_classification" else None
    if kind == "causal_lm":
        return _load_causal_lm(base, list(experts), processor)
    heads, bodies, pooling = [], [], None
    for source in experts:
        if is_peft_adapter(source):
            raise ValueError(f"{source}: PEFT adapters are supported for causal LMs; pass a full classifier checkpoint")
        classifier = from_pretrained_offline(KINDS[kind], source, f"{kind} expert").eval()
        body, head, found = split_classifier(classifier)
        if pooling not in (None, found):
            raise ValueError(f"{source}: its head reads {found} features, the first expert's reads {pooling}")
        pooling = found
        bodies.append({name: p.detach() for name, p in PooledBackbone(body, found).named_parameters()})
        heads.append(head)
    backbone = PooledBackbone(from_pretrained_offline(AutoModel, base, "base model").eval(), pooling, processor)
    return LoadedModels(backbone, bodies, heads, processor)


def _load_causal_lm(base: str, experts: list[str], tokenizer: Any) -> LoadedModels:
    model = from_pretrained_offline(AutoModelForCausalLM, base, "base causal LM").eval()
    adapters = [source for source in experts if is_peft_adapter(source)]
    low_rank: dict[str, LowRankExpert] = {}
    if adapters:
        model, factors = load_lora_experts(model, [_local(s) for s in adapters], prefix="model.")
        low_rank = dict(zip(adapters, factors, strict=True))
    states: list[dict[str, torch.Tensor] | LowRankExpert] = []
    for source in experts:
        if source in low_rank:
            states.append(low_rank[source])
            continue
        expert = from_pretrained_offline(AutoModelForCausalLM, source, "causal LM expert")
        states.append({name: p.detach() for name, p in CausalLMBackbone(expert).named_parameters()})
    return LoadedModels(CausalLMBackbone(model, tokenizer), states, [nn.Identity() for _ in experts], tokenizer)


def is_peft_adapter(source: str | Path) -> bool:
    """True for a folder written by PEFT's save_pretrained (it holds adapter_config.json)."""
    return (Path(_local(source)) / "adapter_config.json").is_file()


def _local(source: str | Path) -> str:
    """A local folder as is; a hub id as its snapshot folder in the cache (unchanged when it is not there)."""
    if Path(source).is_dir():
        return str(source)
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(str(source), local_files_only=True)
    except Exception:  # not cached (or not a valid id): the loader raises the message that says what to pass
        return str(source)


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """The tokenizer saved with `source`; without a padding token, padding reuses end-of-sequence (as HF does)."""
    tokenizer = from_pretrained_offline(AutoTokenizer, source, "tokenizer")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def split_classifier(classifier: PreTrainedModel) -> tuple[PreTrainedModel, nn.Sequential, str]:
    """(body, head, pooling) of an AutoModelFor...Classification: head(pool(body(x))) equals classifier(x).logits.

    The body is `classifier.base_model`; the head is the classifier's other children in order (e.g. BERT's dropout
    and classifier, Llama's score); the pooling is the first of `POOLINGS` that reproduces the logits on a random
    probe input. ValueError when none does (a head that reads more than the body's output).
    """
    body = classifier.base_model
    if body is classifier:
        raise ValueError(f"{type(classifier).__name__} has no separate base model to merge")
    head = nn.Sequential(*(child for child in classifier.children() if child is not body)).eval()
    probe = probe_inputs(classifier)
    with torch.no_grad():
        expected = classifier.eval()(**probe).logits
        for pooling in POOLINGS:
            try:
                got = head(PooledBackbone(body, pooling)(**probe))
            except (AttributeError, RuntimeError, TypeError, ValueError, IndexError):
                continue
            if got.shape == expected.shape and torch.allclose(got, expected, atol=1e-5, rtol=1e-4):
                return body, head, pooling
    raise ValueError(
        f"cannot split {type(classifier).__name__} into a merged body and a per-task head: no pooling of its body's "
        f"output ({', '.join(POOLINGS)}) reproduces its logits; pass experts whose head reads one of those"
    )


def probe_inputs(model: PreTrainedModel, batch: int = 2, length: int = 6) -> dict[str, torch.Tensor]:
    """A random input for `model`: pixel_values for an image model, else token ids avoiding the padding id."""
    config = model.config
    generator = torch.Generator().manual_seed(0)
    if model.main_input_name == "pixel_values":
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        shape = (batch, getattr(config, "num_channels", 3), size, size)
        return {"pixel_values": torch.randn(shape, generator=generator)}
    ids = torch.randint(0, min(config.vocab_size, 1000), (batch, length), generator=generator)
    pad = config.pad_token_id
    if pad is not None:
        ids[ids == pad] = (pad + 1) % config.vocab_size
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def structure_presets(backbone: nn.Module) -> dict[str, list[str]]:
    """The up-scaling presets of `backbone`, from its structure: regular expressions matched in full.

    "mlp": each block's MLP children; "attention_mlp": its attention children too; "attention_mlp_embeddings":
    those and the modules with parameters outside the blocks that are not norms (embeddings, an untied output
    head: what a full fine-tune changes besides the blocks); "all": every child of each block with parameters
    (norms too) and every module with parameters outside the blocks (embeddings, final norm, an untied output
    head). A block stack is an `nn.ModuleList` of modules of one class with a child named
    like attention (attn, attention).
    """
    stacks = block_stacks(backbone)
    if not stacks:
        names = [name for name, _ in backbone.named_modules() if name][:12]
        raise ValueError(
            f"found no stack of transformer blocks in {type(backbone).__name__} (module names: {names}); "
            "pass upscale patterns (regular expressions of module names) instead of a preset"
        )
    roles: dict[str, set[str]] = {"attention": set(), "norm": set(), "mlp": set()}
    for stack in stacks.values():
        for name, child in stack[0].named_children():
            if any(True for _ in child.parameters()):
                roles[_role(name, child)].add(name)

    def per_block(children: set[str]) -> list[str]:
        alternatives = "|".join(sorted(re.escape(c) for c in children))
        return [rf"{re.escape(stack)}\.\d+\.(?:{alternatives})" for stack in stacks] if children else []

    inside = tuple(f"{stack}." for stack in stacks)
    outside = sorted(
        {name.rpartition(".")[0] for name, _ in backbone.named_parameters() if not name.startswith(inside)} - {""}
    )
    blocks = per_block(roles["mlp"] | roles["attention"])
    not_norms = [name for name in outside if _role(name.rpartition(".")[2], backbone.get_submodule(name)) != "norm"]
    return {
        "mlp": per_block(roles["mlp"]),
        "attention_mlp": blocks,
        "attention_mlp_embeddings": blocks + [re.escape(name) for name in not_norms],
        "all": per_block(set().union(*roles.values())) + [re.escape(name) for name in outside],
    }


def block_stacks(backbone: nn.Module) -> dict[str, nn.ModuleList]:
    """Module name -> `nn.ModuleList` of transformer blocks (one class, a child named like attention)."""
    stacks = {}
    for name, module in backbone.named_modules():
        if not isinstance(module, nn.ModuleList) or not len(module):
            continue
        if len({type(block) for block in module}) == 1 and any(
            _is_attention(child) for child, _ in module[0].named_children()
        ):
            stacks[name] = module
    return stacks


def _is_attention(name: str) -> bool:
    return re.search(r"attn|attention", name, re.IGNORECASE) is not None


def _role(name: str, child: nn.Module) -> str:
    """A block child's role: its class or name says norm (post_attention_layernorm is a norm), else attention."""
    if "norm" in type(child).__name__.lower() or re.search(r"norm|^ln_?\d*$", name, re.IGNORECASE):
        return "norm"
    return "attention" if _is_attention(name) else "mlp"


def exported_model_class(kind: str) -> Callable[..., PreTrainedModel]:
    """The Auto class that loads an export of `kind` (a classifier's export is its merged body: AutoModel)."""
    return AutoModelForCausalLM if kind == "causal_lm" else AutoModel
