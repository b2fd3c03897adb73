"""Names -> classes for problems, Pareto set models and solvers.

Each entry is "module:attribute", imported only when used, so `mooframe list` stays fast and heavy optional
dependencies load only for the pieces that need them. Adding a method is one module and one line here.
"""

from __future__ import annotations

import importlib
from typing import Any, TypeVar

from mooframe.pareto_set import ParetoSetModel
from mooframe.problem import Problem
from mooframe.solver import Solver

T = TypeVar("T", Problem, ParetoSetModel, Solver)

PROBLEMS: dict[str, str] = {
    "zdt1": "mooframe.problems.synthetic:ZDT1",
    "zdt2": "mooframe.problems.synthetic:ZDT2",
    "zdt3": "mooframe.problems.synthetic:ZDT3",
    "dtlz2": "mooframe.problems.synthetic:DTLZ2",
    "vlmop2": "mooframe.problems.synthetic:VLMOP2",
    "digits": "mooframe.problems.digits:MultiTaskDigits",
    "clip_image_classification": "mooframe.problems.image_classification:CLIPImageClassification",
    "gpt2_glue": "mooframe.problems.text_classification:GLUETextClassification",
}

MODELS: dict[str, str] = {
    "hypernet": "mooframe.models.hypernetwork:HypernetworkPSL",
    "pwe_moe": "mooframe.models.pwe_moe:PWEMoE",
    "task_arithmetic": "mooframe.models.task_arithmetic:PreferenceTaskArithmetic",
    "ties": "mooframe.models.task_arithmetic:PreferenceTIES",
    "per_ray": "mooframe.models.per_ray:PerRayModels",
    "pareto_merging": "mooframe.models.pareto_merging:ParetoMerging",
    "pretrained": "mooframe.models.baselines:Pretrained",
    "weight_average": "mooframe.models.baselines:WeightAveraging",
    "fisher_merging": "mooframe.models.baselines:FisherMerging",
    "regmean": "mooframe.models.baselines:RegMean",
}

SOLVERS: dict[str, str] = {
    "ls": "mooframe.solvers.ls:LinearScalarization",
    "epo": "mooframe.solvers.epo:EPO",
    "mgda": "mooframe.solvers.mgda:MGDA",
    "tchebycheff": "mooframe.solvers.tchebycheff:Tchebycheff",
    "smooth_tchebycheff": "mooframe.solvers.smooth_tchebycheff:SmoothTchebycheff",
    "upgrad": "mooframe.solvers.upgrad:UPGrad",
    "dualproj": "mooframe.solvers.dualproj:DualProj",
}

_KINDS = {"problem": PROBLEMS, "model": MODELS, "solver": SOLVERS}


def resolve(kind: str, name: str) -> type:
    """The class registered as `name` among problems, models or solvers; ValueError listing known names."""
    table = _KINDS[kind]
    key = name.lower()
    if key not in table:
        raise ValueError(f"unknown {kind} {name!r}; known {kind}s: {', '.join(sorted(table))}")
    module_name, attribute = table[key].split(":")
    return getattr(importlib.import_module(module_name), attribute)


def build_problem(problem: str | Problem, **kwargs: Any) -> Problem:
    """A problem instance from a registered name (with constructor kwargs) or an instance (returned as is)."""
    return _build("problem", Problem, problem, (), kwargs)


def build_model(model: str | ParetoSetModel, problem: Problem, **kwargs: Any) -> ParetoSetModel:
    """A Pareto set model for `problem` from a registered name (with kwargs) or an instance."""
    return _build("model", ParetoSetModel, model, (problem,), kwargs)


def build_solver(solver: str | Solver, **kwargs: Any) -> Solver:
    """A solver from a registered name (with kwargs) or an instance."""
    return _build("solver", Solver, solver, (), kwargs)


def _build(kind: str, base: type[T], spec: str | T, args: tuple, kwargs: dict[str, Any]) -> T:
    """`spec` itself if it is a `base` instance (then no kwargs), else the class registered as `spec`, built from
    `args` and `kwargs` and tagged with its registered name."""
    if isinstance(spec, base):
        _reject_kwargs(kwargs, spec)
        return spec
    instance = resolve(kind, spec)(*args, **kwargs)
    instance.registry_name = spec.lower()
    return instance


def registered() -> dict[str, list[str]]:
    """All registered names, by kind."""
    return {kind: sorted(table) for kind, table in _KINDS.items()}


def _reject_kwargs(kwargs: dict[str, Any], instance: object) -> None:
    if kwargs:
        raise ValueError(
            f"options {sorted(kwargs)} were given with an already built {type(instance).__name__}; "
            "pass them to its constructor instead"
        )
