"""Tiny CLIP (Hugging Face and open_clip) and GPT-2 checkpoints, tokenizers and datasets written to a folder."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn
from transformers import PreTrainedTokenizerFast

WORDS = "a photo of the my number : centered satellite this is good bad movie yes no it he she".split()


def word_tokenizer(extra: Sequence[str] = (), eos: str = "[EOS]", pad: str | None = "[PAD]") -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over WORDS and `extra` (stands in for the real BPE tokenizers)."""
    vocab = {token: i for i, token in enumerate(dict.fromkeys(["[UNK]", eos, *([pad] if pad else []), *WORDS, *extra]))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token=eos, pad_token=pad)


def perturbed(module: nn.Module, seed: int, scale: float = 0.05) -> nn.Module:
    """`module` with every parameter moved by scale * N(0, 1) noise (a stand-in for fine-tuning)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return module


def random_images(n: int, seed: int, size: int = 40) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def write_image_folder(root: Path, splits: dict[str, dict[str, int]], seed: int) -> Path:
    """root/<split>/<class>/<i>.png with `splits[split][class]` random images each."""
    for s, (split, classes) in enumerate(splits.items()):
        for c, (name, count) in enumerate(classes.items()):
            (root / split / name).mkdir(parents=True)
            for i, image in enumerate(random_images(count, seed + 100 * s + c)):
                image.save(root / split / name / f"{i}.png")
    return root


def write_hf_clip(root: Path, n_experts: int) -> tuple[str, list[str]]:
    """A tiny CLIPModel + tokenizer (save_pretrained) and `n_experts` perturbed CLIPVisionModels; their paths."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionModel

    from mooframe.problems.image_classification import image_tasks

    names = {word for task in image_tasks().values() for text in task["class_names"] for word in text.split()}
    tokenizer = word_tokenizer(sorted(names - set(WORDS)))
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=64,
            eos_token_id=2,
        ),
        vision_config=dict(
            image_size=32,
            patch_size=16,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
        ),
        projection_dim=8,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(root / "clip")
    tokenizer.save_pretrained(root / "clip")
    experts = []
    for t in range(n_experts):
        expert = perturbed(CLIPVisionModel.from_pretrained(root / "clip"), seed=t + 1)
        expert.save_pretrained(root / f"expert{t}")
        experts.append(str(root / f"expert{t}"))
    return str(root / "clip"), experts


OPEN_CLIP_CFG = {
    "embed_dim": 8,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 16, "head_width": 8, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


def write_open_clip(root: Path, n_experts: int) -> tuple[str, list[str]]:
    """A tiny open_clip model as a local-dir folder, and image-encoder state dicts (.pt with task-vectors keys,
    then .safetensors with bare keys, alternating); returns "local-dir:<folder>" and the expert files."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.CLIP(**OPEN_CLIP_CFG)
    folder = root / "open_clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": OPEN_CLIP_CFG, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    experts = []
    for t in range(n_experts):
        state = {k: v.contiguous() for k, v in perturbed(copy.deepcopy(model.visual), seed=t + 1).state_dict().items()}
        if t % 2 == 0:
            path = root / f"expert{t}.pt"
            torch.save({f"model.visual.{k}": v for k, v in state.items()}, path)
        else:
            path = root / f"expert{t}.safetensors"
            save_file(state, str(path))
        experts.append(str(path))
    return f"local-dir:{folder}", experts


def write_gpt2(root: Path, num_labels: Sequence[int]) -> tuple[str, list[str]]:
    """A tiny GPT-2 + tokenizer and one perturbed GPT2ForSequenceClassification per entry of `num_labels`."""
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2Model

    tokenizer = word_tokenizer(eos="<|endoftext|>", pad=None)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=32,
        n_embd=16,
        n_layer=2,
        n_head=2,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    GPT2Model(config).save_pretrained(root / "gpt2")
    tokenizer.save_pretrained(root / "gpt2")
    experts = []
    for t, n in enumerate(num_labels):
        classifier = GPT2ForSequenceClassification.from_pretrained(
            root / "gpt2", num_labels=n, pad_token_id=tokenizer.eos_token_id
        )
        perturbed(classifier.transformer, seed=t + 1)
        torch.manual_seed(t + 10)
        nn.init.normal_(classifier.score.weight, std=0.5)
        classifier.save_pretrained(root / f"gpt2_expert{t}")
        experts.append(str(root / f"gpt2_expert{t}"))
    return str(root / "gpt2"), experts
