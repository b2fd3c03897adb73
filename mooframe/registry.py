"""Names -> classes for problems, Pareto set models and solvers.

Each entry is "module:attribute", imported only when used, so `mooframe list` stays fast and heavy optional
dependencies load only for the pieces that need them. Adding a method is one module and one line here.
"""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import types
import typing
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
    "causal_lm": "mooframe.problems.lm:CausalLMTasks",
    "sequence_classification": "mooframe.problems.sequence_classification:SequenceClassificationTasks",
    "lm_digits": "mooframe.problems.lm_default:DigitStringTasks",
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
    `args` and `kwargs`."""
    if isinstance(spec, base):
        _reject_kwargs(kwargs, spec)
        return spec
    check_options(kind, spec, kwargs)
    return resolve(kind, spec)(*args, **kwargs)


def check_options(kind: str, name: str, options: dict[str, Any], source: str | None = None) -> None:
    """Check `options` against the constructor of the `kind` registered as `name`: known names, JSON values of the
    annotated types. ValueError listing the accepted options with their types (prefixed by `source`, e.g. the run
    file and key they came from)."""
    cls = resolve(kind, name)
    parameters = _parameters(cls)
    where = f"{source}: " if source else ""
    unknown = sorted(set(options) - set(parameters))
    if unknown and not _takes_any_keyword(cls):
        raise ValueError(f"{where}unknown {kind} option(s) {unknown} for {name}; it accepts {_describe(parameters)}")
    hints = _type_hints(cls)
    for key, value in options.items():
        hint = hints.get(key)
        if hint is not None and not _matches(value, hint):
            raise ValueError(
                f"{where}{kind} option {key}={value!r} for {name} must be {_type_name(hint)}; "
                f"it accepts {_describe(parameters)}"
            )


def run_options(
    kind: str, name: str, saved: dict[str, Any], supplied: dict[str, Any], trust_paths: bool, source: str
) -> dict[str, Any]:
    """The constructor options to rebuild a run's `kind` from its saved options, checked.

    Options the class lists in `path_options` (model paths, data sources) are taken from the run file only when
    they equal the constructor's default, or with `trust_paths`; `supplied` re-supplies them. Its
    `runtime_options` (progress bars, cache folders) are never taken from a run file (runs saved before they were
    left out hold them); `supplied` gives them.
    """
    cls = resolve(kind, name)
    paths, runtime = tuple(getattr(cls, "path_options", ())), tuple(getattr(cls, "runtime_options", ()))
    extra = sorted(set(supplied) - set(paths) - set(runtime))
    if extra:
        accepted = (
            f"path options ({', '.join(paths) or 'none'}) and runtime options ({', '.join(runtime) or 'none'}) can"
        )
        if not paths and not runtime:
            accepted = "path and runtime options can (it has none)"
        raise ValueError(f"options {extra} cannot be re-supplied for the run's {kind} {name}: only its {accepted}")
    saved = {key: value for key, value in saved.items() if key not in runtime}
    defaults = {key: p.default for key, p in _parameters(cls).items()}
    unconfirmed = {k: v for k, v in saved.items() if k in paths and k not in supplied and v != defaults.get(k)}
    if unconfirmed and not trust_paths:
        shown = ", ".join(f"{k}={v!r}" for k, v in unconfirmed.items())
        raise ValueError(
            f"{source} sets {shown}, which name(s) paths or sources to read; mooframe does not take those from a run "
            f"file: re-supply them (--{kind}-option KEY=VALUE; Python: {kind}_options=) or confirm the run's values "
            "(--trust-run-paths; Python: trust_paths=True)"
        )
    options = {**saved, **supplied}
    check_options(kind, name, options, source)
    return options


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    """Keyword parameters of the constructor, without `self`, `problem` and `*args`/`**kwargs`."""
    skipped = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return {
        name: p
        for name, p in _signature(cls).parameters.items()
        if name not in ("self", "problem") and p.kind not in skipped
    }


def _signature(cls: type) -> inspect.Signature:
    """The constructor's signature; none for a class that inherits `object.__init__` (it takes no options)."""
    return inspect.Signature() if cls.__init__ is object.__init__ else inspect.signature(cls.__init__)


def _takes_any_keyword(cls: type) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in _signature(cls).parameters.values())


def _type_hints(cls: type) -> dict[str, Any]:
    """The constructor's annotations, resolved; one that cannot be resolved is left unchecked."""
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # a name imported only for type checkers: resolve the annotations one by one
        namespace = vars(inspect.getmodule(cls))
        hints = {}
        for name, annotation in getattr(cls.__init__, "__annotations__", {}).items():
            try:
                hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
            except Exception:
                continue
        return hints


def _matches(value: Any, hint: Any) -> bool:
    """Whether the JSON value `value` can stand for an argument annotated `hint` (unknown classes: yes)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None) or hint is None:
        return value is None
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    container = origin or hint
    if container in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, list | tuple):
            return False
        element = args[0] if len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis) else Any
        return all(_matches(item, element) for item in value)
    if container in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    return True


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "None"
    text = getattr(hint, "__name__", None) if not typing.get_args(hint) else str(hint)
    return text.replace("typing.", "").replace("collections.abc.", "")


def _describe(parameters: dict[str, inspect.Parameter]) -> str:
    shown = []
    for name, p in parameters.items():
        annotation = p.annotation if p.annotation is not inspect.Parameter.empty else None
        text = name + (f": {annotation}" if annotation else "")
        shown.append(text + (f" = {p.default!r}" if p.default is not inspect.Parameter.empty else ""))
    return ", ".join(shown) or "no options"


def registered() -> dict[str, list[str]]:
    """All registered names, by kind."""
    return {kind: sorted(table) for kind, table in _KINDS.items()}


def _reject_kwargs(kwargs: dict[str, Any], instance: object) -> None:
    if kwargs:
        raise ValueError(
            f"options {sorted(kwargs)} were given with an already built {type(instance).__name__}; "
            "pass them to its constructor instead"
        )
