"""Pareto set models: one module per method, each a `mooframe.pareto_set.ParetoSetModel`."""

from mooframe.models.baselines import FisherMerging, FixedMerge, Pretrained, RegMean, WeightAveraging
from mooframe.models.hypernetwork import HypernetworkPSL
from mooframe.models.merging import LinearMergingModel, MergingModel
from mooframe.models.pareto_merging import ParetoMerging
from mooframe.models.per_ray import PerRayModels
from mooframe.models.pwe_moe import PWEMoE
from mooframe.models.task_arithmetic import PreferenceTaskArithmetic, PreferenceTIES

__all__ = [
    "PWEMoE",
    "FisherMerging",
    "FixedMerge",
    "HypernetworkPSL",
    "LinearMergingModel",
    "MergingModel",
    "ParetoMerging",
    "PerRayModels",
    "PreferenceTIES",
    "PreferenceTaskArithmetic",
    "Pretrained",
    "RegMean",
    "WeightAveraging",
]
