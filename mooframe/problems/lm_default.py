"""Digit-string tasks: the embedded default language-model problem, generated offline, like digits for vision.

Each task maps the same prompt, a string of digits followed by "=", to a different answer: "copy" repeats it,
"reverse" reverses it, "sort" sorts it. The tasks conflict: no
answer serves two of them, so a merged model must trade them off. A tiny Llama-style decoder
(`transformers.LlamaForCausalLM`, so merging runs the same adapter as any Hugging Face causal LM) is pretrained on
all tasks with the task's name before the digits, and one expert per task is fine-tuned from it on that task's
unnamed prompts, fully or as a PEFT LoRA adapter. The build is deterministic and cached under the mooframe cache
as Hugging Face folders (save_pretrained) with a JSON manifest of their checksums.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mooframe.adapters import hf_auto
from mooframe.atomic import LM_DEFAULT, file_sha256, staged_directory
from mooframe.optional import requires
from mooframe.problems.digits import default_cache_dir, torch_threads
from mooframe.problems.lm import LanguageModelling, answer_token_scores, answer_window, prompt_answer_tokens
from mooframe.problems.text_classification import TokenizedDataset

with requires("text"):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

TASKS = {
    "copy": lambda digits: digits,
    "reverse": lambda digits: digits[::-1],
    "sort": sorted,
}
DEFAULT_TASKS = ("copy", "reverse", "sort")
EXPERT_KINDS = ("full", "lora")

#: Everything the cached models depend on; bump LM_DEFAULT's version when the build recipe changes.
FORMAT = LM_DEFAULT.format
ARCHITECTURE = dict(
    hidden_size=48,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=32,
    tie_word_embeddings=True,
)
RECIPE = dict(
    digits=3,
    train_examples=2000,
    test_examples=300,
    pretrain_steps=250,
    pretrain_batch_size=64,
    expert_steps=100,
    batch_size=32,
    lr=3e-3,
    expert_lr=3e-3,
    lora_rank=8,
    lora_lr=1e-2,
)


def tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the digits, "=", the task names and [PAD] / [EOS] (built offline)."""
    words = ["[PAD]", "[EOS]", "[UNK]", *map(str, range(10)), "=", *TASKS]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="[EOS]", pad_token="[PAD]")


def examples(task: str, n: int, seed: int, named: bool = False) -> tuple[list[str], list[str]]:
    """`n` (prompt, answer) pairs of `task` on random digit strings drawn with `seed`; `named` puts the task's
    name before the digits (the pretraining format)."""
    generator = torch.Generator().manual_seed(seed)
    strings = torch.randint(0, 10, (n, RECIPE["digits"]), generator=generator).tolist()
    prompts = [" ".join([*([task] if named else []), *map(str, s), "="]) for s in strings]
    return prompts, [" ".join(map(str, TASKS[task](s))) for s in strings]


def split_seed(task: str, seed: int, split: str) -> int:
    """The seed of `task`'s "train" or "test" strings under the build `seed` (each split and task its own)."""
    return 1000 * seed + 10 * {"train": 1, "test": 2}[split] + list(TASKS).index(task)


def task_data(task: str, seed: int, split: str) -> TokenizedDataset:
    """The train or test split of `task`, tokenized."""
    n = RECIPE["train_examples" if split == "train" else "test_examples"]
    return prompt_answer_tokens(*examples(task, n, split_seed(task, seed, split)), tokenizer(), 32)


class DigitStringTasks(LanguageModelling):
    """Digit-string tasks merged from T experts of a tiny pretrained decoder (module docstring).

    Objectives are the per-task errors 1 - exact match on held-out strings; the merge trains on the experts'
    training strings.

    Args:
        tasks: task names, at least one, each at most once; known: copy, reverse, sort.
        experts: "full" (fine-tuned checkpoints) or "lora" (PEFT LoRA adapters, held exactly in low rank).
        seed: seeds the data, the pretraining and the fine-tuning; each seed is built and cached once.
        batch_size: training examples per task per step.
        cache_dir: the mooframe cache (default $MOOFRAME_CACHE, else $XDG_CACHE_HOME/mooframe, else
            ~/.cache/mooframe); the build lives in its lm_digits/seed<seed> folder.
        progress: show progress bars while building.
    """

    registry_name = "lm_digits"
    path_options = ("cache_dir",)
    runtime_options = ("cache_dir", "progress")

    def __init__(
        self,
        tasks: Sequence[str] = DEFAULT_TASKS,
        experts: str = "full",
        seed: int = 0,
        batch_size: int = 32,
        cache_dir: str | None = None,
        progress: bool = True,
    ) -> None:
        tasks = list(tasks)
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks {tasks} must be distinct names among {', '.join(TASKS)}; unknown: {unknown}")
        if experts not in EXPERT_KINDS:
            raise ValueError(f"experts must be one of {', '.join(EXPERT_KINDS)}, got {experts!r}")
        self.tasks, self.experts, self.seed, self.cache_dir, self.progress = tasks, experts, seed, cache_dir, progress
        with transformers_bars(progress):
            folder = load_or_build(seed, cache_path(cache_dir, seed), progress)
            loaded = hf_auto.load("causal_lm", str(folder / "base"), [str(folder / experts / t) for t in tasks])
        super().__init__(
            loaded.backbone,
            loaded.experts,
            [task_data(t, seed, "train") for t in tasks],
            [task_data(t, seed, "test") for t in tasks],
            task_names=tasks,
            batch_size=batch_size,
            eval_batch_size=300,
        )


@contextmanager
def transformers_bars(show: bool) -> Iterator[None]:
    """transformers' loading and saving progress bars on or off for the block (then as they were)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    if not show:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def cache_path(cache_dir: str | os.PathLike | None, seed: int) -> Path:
    """The folder of the build for `seed`: base/, full/<task>/, lora/<task>/ and manifest.json."""
    return Path(cache_dir or default_cache_dir()) / "lm_digits" / f"seed{seed}"


def load_or_build(seed: int, folder: Path, progress: bool = True) -> Path:
    """`folder`, built first when missing, built by another recipe, or not matching its manifest's checksums; a
    build is staged beside it and swapped in whole (`mooframe.atomic`), so an interrupted one leaves the old."""
    if _is_current(folder):
        return folder
    with staged_directory(folder, LM_DEFAULT) as staging, torch_threads(1):
        build(seed, staging, progress)
        files = {str(p.relative_to(staging)): file_sha256(p) for p in sorted(staging.rglob("*")) if p.is_file()}
        manifest = {**_expected_manifest(), "sha256": files}
        (staging / LM_DEFAULT.marker).write_text(json.dumps(manifest, indent=2))
    return folder


def _expected_manifest() -> dict:
    return {"format": FORMAT, "architecture": ARCHITECTURE, "recipe": RECIPE, "tasks": list(TASKS)}


def _is_current(folder: Path) -> bool:
    manifest_path = folder / LM_DEFAULT.marker
    if not manifest_path.is_file():
        if folder.exists():
            raise FileExistsError(f"{folder} exists but holds no lm_digits manifest; move it or pass another cache_dir")
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as error:
        logger.warning("lm_digits cache %s is unreadable (%s): rebuilding", folder, error)
        return False
    expected = _expected_manifest()
    if {k: manifest.get(k) for k in expected} != expected:
        logger.warning("lm_digits cache %s was built by another recipe: rebuilding", folder)
        return False
    files = manifest.get("sha256") or {}
    if not files or any(not (folder / n).is_file() or file_sha256(folder / n) != h for n, h in files.items()):
        logger.warning("lm_digits cache %s does not match its checksums (corrupt): rebuilding", folder)
        return False
    return True


def build(seed: int, folder: Path, progress: bool = True) -> None:
    """Pretrain the decoder on every task with its name, then fine-tune one full and one LoRA expert per task on
    its unnamed prompts; write them with save_pretrained into `folder`."""
    torch.manual_seed(seed)
    tok = tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
        **ARCHITECTURE,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    named = [examples(task, RECIPE["train_examples"], 1000 * seed + 5, named=True) for task in TASKS]
    pretraining = prompt_answer_tokens(
        [p for ps, _ in named for p in ps], [a for _, as_ in named for a in as_], tok, 32
    )
    generator = torch.Generator().manual_seed(seed)
    _train(model, pretraining, RECIPE["pretrain_steps"], RECIPE["lr"], generator, "pretrain" if progress else None,
           RECIPE["pretrain_batch_size"])  # fmt: skip
    model.save_pretrained(str(folder / "base"))
    tok.save_pretrained(str(folder / "base"))
    for task in tqdm(TASKS, desc="experts", disable=not progress):
        data = task_data(task, seed, "train")
        expert = LlamaForCausalLM(config)
        expert.load_state_dict(model.state_dict())
        _train(expert, data, RECIPE["expert_steps"], RECIPE["expert_lr"], generator, None)
        expert.save_pretrained(str(folder / "full" / task))
        _lora_expert(model, data, generator).save_pretrained(str(folder / "lora" / task))


def _lora_expert(base: LlamaForCausalLM, data: TokenizedDataset, generator: torch.Generator) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    copy = LlamaForCausalLM(base.config)
    copy.load_state_dict(base.state_dict())
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraConfig(r=RECIPE["lora_rank"], lora_alpha=RECIPE["lora_rank"], target_modules=targets, lora_dropout=0.0)
    peft_model = get_peft_model(copy, lora)
    _train(peft_model, data, RECIPE["expert_steps"], RECIPE["lora_lr"], generator, None)
    return peft_model


def _train(
    model: torch.nn.Module,
    data: TokenizedDataset,
    steps: int,
    lr: float,
    generator: torch.Generator,
    desc: str | None,
    batch_size: int = RECIPE["batch_size"],
) -> None:
    """AdamW on the answer-token cross-entropy, random batches of `batch_size`."""
    backbone = hf_auto.CausalLMBackbone(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    window = answer_window(data)
    model.train()
    for _ in tqdm(range(steps), desc=desc, disable=desc is None, leave=False):
        index = torch.randint(len(data), (batch_size,), generator=generator)
        inputs, labels = data.batch(index)
        losses, mask, _ = answer_token_scores(backbone(**inputs, logits_to_keep=window), labels)
        loss = losses.sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
