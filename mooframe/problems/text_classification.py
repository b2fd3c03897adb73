"""GPT-2 on GLUE text classification (CoLA, MNLI, MRPC, QNLI, QQP, RTE, SST-2) as a merging problem.

Each task's expert is a GPT2ForSequenceClassification fine-tuned from the same GPT-2 and keeps its own head;
inputs are tokenized with the pretrained model's tokenizer, padded to a fixed length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from mooframe.adapters import gpt2
from mooframe.problems.pretrained import PretrainedMergingProblem, check_precision, first, load_hf_dataset, per_task

#: Text columns of each GLUE task (one sentence or a pair).
GLUE_COLUMNS: dict[str, tuple[str, ...]] = {
    "cola": ("sentence",),
    "mnli": ("premise", "hypothesis"),
    "mrpc": ("sentence1", "sentence2"),
    "qnli": ("question", "sentence"),
    "qqp": ("question1", "question2"),
    "rte": ("sentence1", "sentence2"),
    "sst2": ("sentence",),
}
GLUE_HUB_ID = "nyu-mll/glue"


class GLUETextClassification(PretrainedMergingProblem):
    """Merge T GPT-2 classifiers fine-tuned on T GLUE tasks; each task is scored by its expert's own head.

    Args:
        tasks: GLUE task names among cola, mnli, mrpc, qnli, qqp, rte, sst2.
        model: the pretrained GPT-2 (a save_pretrained folder with its tokenizer, or a hub id such as "gpt2"
            in the Hugging Face cache).
        experts: one GPT2ForSequenceClassification per task: folder or hub id (default FusionBench's
            tanganke/gpt2_<task>).
        data: one `save_to_disk` folder per task, or None for nyu-mll/glue in the Hugging Face datasets cache.
        train_split, test_split: split names; GLUE's test labels are hidden, so evaluation uses "validation"
            (MNLI: "validation_matched").
        max_length: tokens per example (longer inputs are truncated, shorter ones padded).
        max_train_examples, max_test_examples, precision, objective, batch_size, eval_batch_size: as in
            CLIPImageClassification.
    """

    registry_name = "gpt2_glue"

    path_options = ("model", "experts", "data")

    def __init__(
        self,
        tasks: Sequence[str],
        model: str = "gpt2",
        experts: Sequence[str] | None = None,
        data: Sequence[str | None] | None = None,
        train_split: str = "train",
        test_split: str = "validation",
        max_length: int = 128,
        max_train_examples: int | None = None,
        max_test_examples: int | None = None,
        precision: str = "float32",
        objective: str = "cross_entropy",
        batch_size: int = 16,
        eval_batch_size: int = 256,
    ) -> None:
        self.tasks, self.model = list(tasks), model
        self.experts = None if experts is None else list(experts)
        self.data = None if data is None else list(data)
        self.train_split, self.test_split, self.max_length = train_split, test_split, max_length
        self.max_train_examples, self.max_test_examples = max_train_examples, max_test_examples
        unknown = [task for task in self.tasks if task not in GLUE_COLUMNS]
        if unknown or not self.tasks:
            raise ValueError(f"unknown GLUE tasks {unknown}; pass some of {', '.join(GLUE_COLUMNS)}")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 tokens, got {max_length}")
        check_precision(precision)
        sources = per_task(experts, self.tasks, "expert checkpoints")
        data_sources = per_task(data, self.tasks, "data folders (or None for the cache)")
        pretrained = gpt2.load_backbone(model)
        tokenizer = gpt2.load_tokenizer(model)
        loaded = [gpt2.load_expert(s or gpt2.expert_source(t)) for s, t in zip(sources, self.tasks, strict=True)]
        train, test = [], []
        for task, source in zip(self.tasks, data_sources, strict=True):
            split = "validation_matched" if task == "mnli" and test_split == "validation" else test_split
            for out, name, limit in ((train, train_split, max_train_examples), (test, split, max_test_examples)):
                rows = load_hf_dataset(source, GLUE_HUB_ID, name, config=task)
                out.append(tokenized(task, first(rows, limit), tokenizer, max_length))
        super().__init__(
            pretrained,
            [body for body, _ in loaded],
            [head for _, head in loaded],
            train,
            test,
            task_names=self.tasks,
            objective=objective,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            upscale_presets=gpt2.UPSCALE_PRESETS,
        )
        self.set_precision(precision)


class TokenizedDataset(Dataset):
    """({"input_ids", "attention_mask"}, label) pairs of fixed length, held as tensors: batches are taken by bulk
    indexing in the main process (`batch`), with no loader workers."""

    def __init__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> None:
        self.input_ids, self.attention_mask, self.labels = input_ids, attention_mask, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index]}, self.labels[index]

    def batch(self, indices: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return self[indices]


def tokenized(task: str, rows: Any, tokenizer: Any, max_length: int) -> TokenizedDataset:
    """Tokenize a GLUE split (a sentence or a sentence pair per row), padded and truncated to `max_length`."""
    missing = [c for c in (*GLUE_COLUMNS[task], "label") if c not in rows.column_names]
    if missing:
        raise ValueError(f"GLUE {task!r} data lacks columns {missing}; it has {rows.column_names}")
    texts = [list(rows[column]) for column in GLUE_COLUMNS[task]]
    tokens = tokenizer(*texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return TokenizedDataset(tokens["input_ids"], tokens["attention_mask"], torch.tensor(list(rows["label"])))
