"""Problems: synthetic benchmarks with known fronts, and merging problems over real models.

The problems over pretrained models (digits, CLIP image and GPT-2 text classification, any transformers model,
the language-model default) load on first use, so
that importing `mooframe.problems` does not import transformers or datasets.
"""

import importlib
from typing import Any

from mooframe.problems.merging import MergingProblem, expert_distances, prediction_entropy
from mooframe.problems.synthetic import DTLZ2, VLMOP2, ZDT1, ZDT2, ZDT3, SyntheticProblem

_ON_FIRST_USE = {
    "MultiTaskDigits": "mooframe.problems.digits",
    "CLIPImageClassification": "mooframe.problems.image_classification",
    "GLUETextClassification": "mooframe.problems.text_classification",
    "PretrainedMergingProblem": "mooframe.problems.pretrained",
    "LanguageModelling": "mooframe.problems.lm",
    "CausalLMTasks": "mooframe.problems.lm",
    "SequenceClassificationTasks": "mooframe.problems.sequence_classification",
    "DigitStringTasks": "mooframe.problems.lm_default",
}

__all__ = [
    "DTLZ2",
    "VLMOP2",
    "ZDT1",
    "ZDT2",
    "ZDT3",
    "MergingProblem",
    "SyntheticProblem",
    "expert_distances",
    "prediction_entropy",
    *_ON_FIRST_USE,
]


def __getattr__(name: str) -> Any:
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module 'mooframe.problems' has no attribute {name!r}")
    return getattr(importlib.import_module(_ON_FIRST_USE[name]), name)
