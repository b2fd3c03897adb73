"""Sequence classification with any Hugging Face classifier as a merging problem (GLUE-style data).

Each task's expert is an AutoModelForSequenceClassification fine-tuned from the same base; its body is merged and
its own head scores its task (`hf_auto.split_classifier`). Inputs are tokenized with the base model's tokenizer,
padded to a fixed length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mooframe.adapters import hf_auto
from mooframe.problems.lm import load_rows
from mooframe.problems.pretrained import PretrainedMergingProblem, check_precision, first, per_task
from mooframe.problems.text_classification import TokenizedDataset


class SequenceClassificationTasks(PretrainedMergingProblem):
    """Merge T sequence classifiers (BERT, RoBERTa, Llama/Qwen2 with a score head, ...) fine-tuned from one base.

    Args:
        model: the base model with its tokenizer (a save_pretrained folder, or a hub id in the cache).
        experts: one AutoModelForSequenceClassification per task (folder or hub id).
        data: one per task: a `save_to_disk` folder, a data file path holding "{split}", or a hub dataset id in
            the datasets cache.
        text_columns: one column (a sentence) or two (a sentence pair), the same for every task, or one list per
            task; label_column: the integer class column.
        tasks: short task names (default task1, ..., taskT).
        train_split, test_split, max_length, max_train_examples, max_test_examples, precision, objective,
            batch_size, eval_batch_size: as in GLUETextClassification.
    """

    registry_name = "sequence_classification"

    path_options = ("model", "experts", "data")

    def __init__(
        self,
        model: str,
        experts: Sequence[str],
        data: Sequence[str],
        text_columns: Sequence[str] | Sequence[Sequence[str]] = ("sentence",),
        label_column: str = "label",
        tasks: Sequence[str] | None = None,
        train_split: str = "train",
        test_split: str = "validation",
        max_length: int = 128,
        max_train_examples: int | None = None,
        max_test_examples: int | None = None,
        precision: str = "float32",
        objective: str = "cross_entropy",
        batch_size: int = 16,
        eval_batch_size: int = 128,
    ) -> None:
        self.model, self.experts, self.data = model, list(experts), list(data)
        self.tasks = list(tasks) if tasks is not None else [f"task{t + 1}" for t in range(len(self.experts))]
        self.text_columns = [c if isinstance(c, str) else list(c) for c in text_columns]
        self.label_column, self.train_split, self.test_split = label_column, train_split, test_split
        self.max_length, self.max_train_examples, self.max_test_examples = (
            max_length,
            max_train_examples,
            max_test_examples,
        )
        check_precision(precision)
        per_task(self.experts, self.tasks, "experts")
        per_task(self.data, self.tasks, "data sources")
        columns = self.text_columns if all(isinstance(c, list) for c in self.text_columns) else None
        columns = (
            per_task(columns, self.tasks, "text column lists") if columns else [self.text_columns] * len(self.tasks)
        )
        if any(not 1 <= len(c) <= 2 for c in columns):
            raise ValueError(f"pass one or two text columns per task (a sentence or a pair), got {self.text_columns}")
        loaded = hf_auto.load("sequence_classification", model, self.experts)
        train, test = [], []
        for source, names in zip(self.data, columns, strict=True):
            for out, split, limit in ((train, train_split, max_train_examples), (test, test_split, max_test_examples)):
                out.append(self._tokens(first(load_rows(source, split), limit), names, loaded.tokenizer))
        super().__init__(
            loaded.backbone, loaded.experts, loaded.heads, train, test, task_names=self.tasks, objective=objective,
            batch_size=batch_size, eval_batch_size=eval_batch_size,
            upscale_presets=hf_auto.structure_presets(loaded.backbone),
        )  # fmt: skip
        self.set_precision(precision)

    def _tokens(self, rows: Any, columns: list[str], tokenizer: Any) -> TokenizedDataset:
        missing = [c for c in (*columns, self.label_column) if c not in rows.column_names]
        if missing:
            raise ValueError(f"the data lacks columns {missing}; it has {rows.column_names}")
        texts = [list(rows[c]) for c in columns]
        tokens = tokenizer(*texts, padding="max_length", truncation=True, max_length=self.max_length,
                           return_tensors="pt")  # fmt: skip
        labels = torch.tensor(list(rows[self.label_column]))
        return TokenizedDataset(tokens["input_ids"], tokens["attention_mask"], labels)
