"""Tiny Llama, Qwen2, BERT checkpoints, PEFT adapters and prompt/answer files, as save_pretrained writes them."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from tests.tiny_checkpoints import perturbed

WORDS = ["[PAD]", "[EOS]", "[UNK]", *map(str, range(10)), "=", "a", "b", "c", "good", "bad", "movie", "is"]


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over digits and a few words, with [PAD] and [EOS]."""
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="[EOS]", pad_token="[PAD]")


def decoder_config(family: str, **overrides):
    """A two-layer decoder config of `family` ("llama", "qwen2" or "mistral") over `char_tokenizer`'s vocabulary."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    config = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}[family]
    sizes = dict(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    return config(vocab_size=len(WORDS), pad_token_id=0, eos_token_id=1, bos_token_id=None, max_position_embeddings=64,
                  **{**sizes, **overrides})  # fmt: skip


def write_causal_lms(
    root: Path, family: str, n_full: int, n_lora: int, seed: int = 0, **config: object
) -> tuple[str, list[str]]:
    """A base causal LM + tokenizer, `n_full` perturbed full experts and `n_lora` PEFT LoRA adapters; their paths."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_config(decoder_config(family, **config))
    base.save_pretrained(root / "base")
    char_tokenizer().save_pretrained(root / "base")
    experts = []
    for t in range(n_full):
        expert = AutoModelForCausalLM.from_pretrained(root / "base")
        perturbed(expert, seed + t + 1).save_pretrained(root / f"full{t}")
        experts.append(str(root / f"full{t}"))
    for t in range(n_lora):
        torch.manual_seed(seed + 100 + t)
        lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
        get_peft_model(AutoModelForCausalLM.from_pretrained(root / "base"), lora).save_pretrained(root / f"lora{t}")
        experts.append(str(root / f"lora{t}"))
    return str(root / "base"), experts


def write_prompt_answers(root: Path, n_tasks: int, n: int = 12) -> list[str]:
    """Per task a "<root>/task<t>-{split}.jsonl" path: digit prompts and answers (train and test files)."""
    paths = []
    for t in range(n_tasks):
        for s, split in enumerate(("train", "test")):
            generator = torch.Generator().manual_seed(10 * t + s)
            digits = torch.randint(0, 10, (n, 3), generator=generator).tolist()
            rows = [{"prompt": " ".join(map(str, d)) + " =", "answer": " ".join(map(str, d[::-1][: 1 + (i + t) % 3]))}
                    for i, d in enumerate(digits)]  # fmt: skip
            (root / f"task{t}-{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        paths.append(str(root / f"task{t}-{{split}}.jsonl"))
    return paths


def write_classifiers(root: Path, family: str, labels: list[int], seed: int = 0) -> tuple[str, list[str]]:
    """A base model + tokenizer and one perturbed sequence classifier per entry of `labels` (its class count)."""
    from transformers import AutoModel, AutoModelForSequenceClassification, BertConfig

    torch.manual_seed(seed)
    if family == "bert":
        config = BertConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=64, pad_token_id=0)  # fmt: skip
    else:
        config = decoder_config(family)
    AutoModel.from_config(config).save_pretrained(root / "base")
    char_tokenizer().save_pretrained(root / "base")
    experts = []
    for t, n_labels in enumerate(labels):
        expert = AutoModelForSequenceClassification.from_pretrained(root / "base", num_labels=n_labels)
        perturbed(expert, seed + t + 1).save_pretrained(root / f"expert{t}")
        experts.append(str(root / f"expert{t}"))
    return str(root / "base"), experts


def write_sentences(root: Path, labels: list[int], n: int = 10) -> list[str]:
    """Per task a "<root>/sent<t>-{split}.jsonl" path of word sentences with labels below labels[t]."""
    words = WORDS[13:]
    paths = []
    for t, n_labels in enumerate(labels):
        for s, split in enumerate(("train", "validation")):
            generator = torch.Generator().manual_seed(50 + 10 * t + s)
            picks = torch.randint(0, len(words), (n, 4), generator=generator).tolist()
            rows = [{"sentence": " ".join(words[i] for i in p[: 2 + k % 3]), "label": k % n_labels}
                    for k, p in enumerate(picks)]  # fmt: skip
            (root / f"sent{t}-{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        paths.append(str(root / f"sent{t}-{{split}}.jsonl"))
    return paths
