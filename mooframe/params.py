"""Hyperparameters of problems, models and solvers, read back from their constructors (as scikit-learn does).

A class stores each constructor argument as an attribute of the same name; `get_params` reads them back so a
run can record exactly how each piece was built (JSON) and rebuild it on load. Arguments that change how a
piece runs but not what it computes (progress bars, cache folders) are its class's `runtime_options`: they are
not stored in a run, and are supplied again where a run is loaded or resumed.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Collection
from typing import Any

_SKIPPED = {"self", "problem"}


def get_params(obj: Any, skip: Collection[str] = ()) -> dict[str, Any]:
    """Constructor arguments of `obj` (read from attributes of the same name), excluding `problem` and `skip`.

    Raises TypeError when an argument is not stored: a spec that silently left it out would rebuild `obj` with
    its default instead.
    """
    cls = type(obj)
    params = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name in _SKIPPED or name in skip or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if not hasattr(obj, name):
            raise TypeError(
                f"{cls.__name__} does not store its constructor argument {name!r} as an attribute: store it as "
                f"self.{name} so a saved run can rebuild it, or list it in {cls.__name__}.runtime_options if it does "
                "not change what is computed"
            )
        params[name] = getattr(obj, name)
    return params


def spec_of(piece: Any) -> dict[str, Any] | None:
    """How to rebuild `piece` by name: `{"name", "kwargs"}`, its class's registry name and its constructor arguments
    less its `runtime_options`; None when its class is not registered (a subclass does not inherit the name: the
    registered class would rebuild something else)."""
    name = vars(type(piece)).get("registry_name")
    if name is None:
        return None
    return {"name": name, "kwargs": get_params(piece, skip=getattr(piece, "runtime_options", ()))}


def is_json_serializable(params: dict[str, Any]) -> bool:
    """True when `params` round-trips through JSON (so the object can be rebuilt from a saved run)."""
    try:
        return json.loads(json.dumps(params)) == params
    except (TypeError, ValueError):
        return False
