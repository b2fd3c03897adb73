"""Causal language modelling as a merging problem: T tasks of prompt/answer pairs, one fine-tuned expert per task.

Task t's loss is the next-token cross-entropy on its answer tokens (the prompt is context only), averaged over
those tokens. Examples are left-padded to one length, so every answer ends at the last position and only the
last `window` positions' logits are computed (a (B, L, V) tensor is never formed for a long prompt).

Evaluation scores each task by its answers:
- "exact_match": an answer counts when greedy decoding reproduces it. Under teacher forcing, greedy decoding
  emits answer token i exactly when the argmax after the prompt and answer tokens < i is token i; so the answer
  (with its end-of-sequence token) is reproduced iff every answer position's argmax is right, which one forward
  pass decides, for every preference, with no decoding loop.
- "choice": multiple choice by log-likelihood: the choice whose tokens have the highest total log-probability.
- "loss": the front is the answer-token cross-entropy itself.
Metrics per task: "accuracy" (exact match or choice; the front's objective is 1 - accuracy), "token_accuracy"
and "loss" (mean answer-token cross-entropy; of the correct choice for multiple choice).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mooframe.adapters import hf_auto
from mooframe.data import ordered_batches, to_device
from mooframe.problem import Evaluation
from mooframe.problems.pretrained import PretrainedMergingProblem, check_precision, first, load_hf_dataset, per_task
from mooframe.problems.text_classification import TokenizedDataset

IGNORE = -100
SCORES = ("exact_match", "choice", "loss")


class ChoiceDataset(TokenizedDataset):
    """Multiple-choice rows: each question's `n_choices` prompt + choice sequences, consecutive; `answers` (N,)."""

    def __init__(self, rows: TokenizedDataset, answers: torch.Tensor, n_choices: int) -> None:
        super().__init__(rows.input_ids, rows.attention_mask, rows.labels)
        if len(rows) != len(answers) * n_choices:
            raise ValueError(f"{len(rows)} rows are not {len(answers)} questions x {n_choices} choices")
        self.answers, self.n_choices = answers, n_choices


def prompt_answer_tokens(
    prompts: Sequence[str], answers: Sequence[str], tokenizer: Any, max_length: int
) -> TokenizedDataset:
    """Left-padded prompt + answer + end-of-sequence tokens, labels = the answer tokens (IGNORE elsewhere).

    A prompt too long for `max_length` loses its first tokens; an answer that does not fit is an error.
    """
    if len(prompts) != len(answers) or not len(prompts):
        raise ValueError(f"pass as many prompts as answers (at least one), got {len(prompts)} and {len(answers)}")
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer needs an end-of-sequence and a padding token")
    prompt_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    answer_ids = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
    rows = []
    for prompt, answer in zip(prompt_ids, answer_ids, strict=True):
        answer = [*answer, tokenizer.eos_token_id]
        if len(answer) >= max_length:
            raise ValueError(f"an answer of {len(answer)} tokens does not fit in max_length={max_length}")
        prompt = prompt[-(max_length - len(answer)) :]
        rows.append((prompt, answer))
    length = max(len(p) + len(a) for p, a in rows)
    input_ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (prompt, answer) in enumerate(rows):
        sequence = torch.tensor(prompt + answer)
        input_ids[i, length - len(sequence) :] = sequence
        mask[i, length - len(sequence) :] = 1
        labels[i, length - len(answer) :] = torch.tensor(answer)
    return TokenizedDataset(input_ids, mask, labels)


def answer_window(data: TokenizedDataset) -> int:
    """Positions whose logits a dataset's answers need: the longest answer + 1 (the prompt's last position)."""
    answered = (data.labels != IGNORE).any(0)
    return int(data.labels.shape[1] - answered.float().argmax()) + 1


def answer_token_scores(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(cross-entropy (B, K-1), answer mask, argmax hits) of the last K positions' logits on their next tokens."""
    targets = labels[:, -(logits.shape[1] - 1) :]
    predicted = logits[:, :-1].float()
    mask = targets != IGNORE
    losses = F.cross_entropy(predicted.transpose(1, 2), targets.clamp(min=0), reduction="none") * mask
    hits = (predicted.argmax(-1) == targets) & mask
    return losses, mask, hits


class LanguageModelling(PretrainedMergingProblem):
    """Merge T causal-LM experts of one base; task t's objective is scored on its prompt/answer pairs.

    Args:
        pretrained: the base model as a `CausalLMBackbone`.
        experts: T experts (state dicts by the backbone's names, or `LowRankExpert`s for LoRA adapters).
        train_data: T datasets from `prompt_answer_tokens`.
        test_data: T such datasets, or `ChoiceDataset`s for tasks scored by "choice".
        scored_by: one of "exact_match", "choice", "loss" per task (or one for all): the front's objective.
        task_names, batch_size, eval_batch_size, upscale_presets: as in MergingProblem (presets default to the
            model's own, `hf_auto.structure_presets`).
    """

    def __init__(
        self,
        pretrained: hf_auto.CausalLMBackbone,
        experts: Sequence[Any],
        train_data: Sequence[TokenizedDataset],
        test_data: Sequence[TokenizedDataset] | None = None,
        task_names: Sequence[str] | None = None,
        scored_by: str | Sequence[str] = "exact_match",
        batch_size: int = 16,
        eval_batch_size: int = 64,
        upscale_presets: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(
            pretrained,
            experts,
            [nn.Identity() for _ in experts],
            train_data,
            test_data,
            task_names=task_names,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            upscale_presets=upscale_presets or hf_auto.structure_presets(pretrained),
        )
        scores = [scored_by] * len(experts) if isinstance(scored_by, str) else list(scored_by)
        if len(scores) != len(experts) or any(s not in SCORES for s in scores):
            raise ValueError(f"scored_by must be one of {', '.join(SCORES)} (or one per task), got {scored_by!r}")
        for t, (score, data) in enumerate(zip(scores, self.test_data, strict=True)):
            if (score == "choice") != isinstance(data, ChoiceDataset):
                raise ValueError(
                    f"task {self.task_names[t]!r}: pass a ChoiceDataset as test data exactly when it is scored by "
                    f"'choice' (scored by {score!r}, test data {type(data).__name__})"
                )
        self.scores = scores
        self.windows = [
            max(answer_window(train), answer_window(test))
            for train, test in zip(self.train_data, self.test_data, strict=True)
        ]

    def logits(self, solution: Callable[..., torch.Tensor], task: int, inputs: Any) -> torch.Tensor:
        """Next-token logits at the last `windows[task]` positions, shape (B, window, V)."""
        inputs = to_device(inputs, self.device)
        with self.autocast():
            return solution(**inputs, logits_to_keep=self.windows[task]).float()

    def _losses(self, solution: Callable[..., torch.Tensor], batch: list[tuple[Any, torch.Tensor]]) -> torch.Tensor:
        if self.objective == "weight_distance":
            return super()._losses(solution, batch)
        values = []
        for task, (inputs, labels) in enumerate(batch):
            losses, mask, _ = answer_token_scores(self.logits(solution, task, inputs), labels.to(self.device))
            values.append(losses.sum() / mask.sum().clamp(min=1))
        return torch.stack(values)

    def _evaluate_many(self, solutions: Sequence[Callable[..., torch.Tensor]], progress: bool) -> list[Evaluation]:
        """Each test batch read once and scored under every solution: per row the answer's summed cross-entropy,
        its token count, its argmax hits; then per task accuracy, token accuracy and loss (module docstring)."""
        n = len(solutions)
        rows: list[list[list[torch.Tensor]]] = [[[] for _ in self.test_data] for _ in range(n)]
        bar = tqdm(total=sum(len(d) for d in self.test_data), desc=f"evaluate x{n}", disable=not progress)
        batches = ordered_batches(self.test_data, self.eval_batch_size, self.workers, self.device.type == "cuda")
        with torch.no_grad(), bar:
            for task, (inputs, labels) in batches:
                labels = labels.to(self.device)
                for k, solution in enumerate(solutions):
                    losses, mask, hits = answer_token_scores(self.logits(solution, task, inputs), labels)
                    rows[k][task].append(torch.stack([losses.sum(1), mask.sum(1), hits.sum(1)], 1).double())
                bar.update(len(labels))
        evaluations = []
        for k in range(n):
            metrics = np.array([self._task_metrics(t, torch.cat(r).cpu()) for t, r in enumerate(rows[k])])
            accuracy, token_accuracy, loss = metrics.T
            objectives = np.where(np.array(self.scores) == "loss", loss, 1.0 - accuracy)
            evaluations.append(
                Evaluation(objectives, {"accuracy": accuracy, "token_accuracy": token_accuracy, "loss": loss})
            )
        return evaluations

    def _task_metrics(self, task: int, rows: torch.Tensor) -> tuple[float, float, float]:
        """(accuracy, token accuracy, loss) of one task from its rows' (loss sum, tokens, hits)."""
        data = self.test_data[task]
        if isinstance(data, ChoiceDataset):
            grouped = rows.reshape(len(data.answers), data.n_choices, 3)
            accuracy = (grouped[..., 0].argmin(1) == data.answers).double().mean()  # highest log-likelihood
            rows = grouped[torch.arange(len(data.answers)), data.answers]  # the correct choices
        else:
            accuracy = (rows[:, 2] == rows[:, 1]).double().mean()
        tokens = rows[:, 1].sum()
        return float(accuracy), float(rows[:, 2].sum() / tokens), float(rows[:, 0].sum() / tokens)


class CausalLMTasks(LanguageModelling):
    """T causal-LM experts of one base model merged on T prompt/answer datasets (loaded by `hf_auto.load`).

    Args:
        model: the base causal LM with its tokenizer (a save_pretrained folder, or a hub id in the cache).
        experts: one per task: a full checkpoint, or a PEFT LoRA adapter folder of the base.
        data: one per task: a `save_to_disk` folder, a .json/.jsonl/.csv/.parquet file path holding "{split}"
            (one file per split), or a hub dataset id in the datasets cache, with the columns named below.
        tasks: short task names (default task1, ..., taskT).
        prompt_column, answer_column: the text columns; with `choices_column` set, a task is multiple choice: the
            row's choices (a list of strings) and `answer_column` the index of the correct one.
        train_split, test_split: split names.
        max_length: tokens per example; max_train_examples, max_test_examples: the first that many rows.
        scored_by: "exact_match" (default; "choice" where `choices_column` is set) or "loss".
        precision: "float32", or "bfloat16"/"float16" for the frozen parts (e.g. on CUDA).
    """

    registry_name = "causal_lm"

    path_options = ("model", "experts", "data")

    def __init__(
        self,
        model: str,
        experts: Sequence[str],
        data: Sequence[str],
        tasks: Sequence[str] | None = None,
        prompt_column: str = "prompt",
        answer_column: str = "answer",
        choices_column: str | None = None,
        train_split: str = "train",
        test_split: str = "test",
        max_length: int = 512,
        max_train_examples: int | None = None,
        max_test_examples: int | None = None,
        scored_by: str = "exact_match",
        batch_size: int = 8,
        eval_batch_size: int = 32,
        precision: str = "float32",
    ) -> None:
        self.model, self.experts, self.data = model, list(experts), list(data)
        self.tasks = list(tasks) if tasks is not None else [f"task{t + 1}" for t in range(len(self.experts))]
        self.prompt_column, self.answer_column, self.choices_column = prompt_column, answer_column, choices_column
        self.train_split, self.test_split, self.max_length = train_split, test_split, max_length
        self.max_train_examples, self.max_test_examples = max_train_examples, max_test_examples
        self.scored_by, self.precision = scored_by, precision
        check_precision(precision)
        per_task(self.experts, self.tasks, "experts")
        per_task(self.data, self.tasks, "data sources")
        loaded = hf_auto.load("causal_lm", model, self.experts)
        train, test = [], []
        for source in self.data:
            train_rows = first(load_rows(source, train_split), max_train_examples)
            test_rows = first(load_rows(source, test_split), max_test_examples)
            train.append(self._tokens(train_rows, loaded.tokenizer, choices=False))
            test.append(self._tokens(test_rows, loaded.tokenizer, choices=choices_column is not None))
        super().__init__(
            loaded.backbone,
            loaded.experts,
            train,
            test,
            task_names=self.tasks,
            scored_by="choice" if choices_column is not None and scored_by == "exact_match" else scored_by,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
        )
        self.set_precision(precision)

    def _tokens(self, rows: Any, tokenizer: Any, choices: bool) -> TokenizedDataset:
        columns = [self.prompt_column, self.answer_column, *([self.choices_column] if self.choices_column else [])]
        missing = [c for c in columns if c not in rows.column_names]
        if missing:
            raise ValueError(f"the data lacks columns {missing}; it has {rows.column_names}")
        prompts, answers = list(rows[self.prompt_column]), list(rows[self.answer_column])
        if self.choices_column is None:
            return prompt_answer_tokens(prompts, [str(a) for a in answers], tokenizer, self.max_length)
        options = list(rows[self.choices_column])
        if not choices:  # training: the correct choice as the answer
            return prompt_answer_tokens(prompts, [o[a] for o, a in zip(options, answers, strict=True)], tokenizer,
                                        self.max_length)  # fmt: skip
        counts = {len(o) for o in options}
        if len(counts) != 1:
            raise ValueError(f"multiple-choice rows must have the same number of choices, got {sorted(counts)}")
        flat = prompt_answer_tokens(
            [p for p, o in zip(prompts, options, strict=True) for _ in o], [c for o in options for c in o],
            tokenizer, self.max_length,
        )  # fmt: skip
        return ChoiceDataset(flat, torch.tensor([int(a) for a in answers]), counts.pop())


FILE_FORMATS = (".json", ".jsonl", ".parquet")


def load_rows(source: str, split: str) -> Any:
    """Split `split` of `source`: a data file (JSON lines, a JSON list of rows, or parquet) whose path names the
    split as "{split}" (e.g. "copy-{split}.jsonl"), a `save_to_disk` folder, or a hub dataset id in the datasets
    cache. Files are read into memory (nothing is written to the datasets cache)."""
    path = Path(source)
    if path.suffix not in FILE_FORMATS:
        return load_hf_dataset(source if path.is_dir() else None, source, split)
    if "{split}" not in source:
        raise ValueError(f"data file {source!r}: put {{split}} in its name (e.g. copy-{{split}}.jsonl), one per split")
    path = Path(source.replace("{split}", split))
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist; pass a jsonl, json or parquet file")
    import datasets

    if path.suffix == ".parquet":
        import pyarrow.parquet

        return datasets.Dataset(pyarrow.parquet.read_table(path))
    text = path.read_text()
    try:
        rows = json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines() if line]
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON{' lines' if path.suffix == '.jsonl' else ''}: {error}") from error
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path} must hold a non-empty list of rows (JSON objects)")
    return datasets.Dataset.from_list(rows)
