"""Hyperparameters of problems, models and solvers, read back from their constructors (as scikit-learn does).

A class stores each constructor argument as an attribute of the same name; `get_params` reads them back so a
run can record exactly how each piece was built (JSON) and rebuild it on load.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

_SKIPPED = {"self", "problem"}


def get_params(obj: Any) -> dict[str, Any]:
    """Constructor arguments of `obj` (read from attributes of the same name), excluding `problem`."""
    signature = inspect.signature(type(obj).__init__)
    params = {}
    for name, parameter in signature.parameters.items():
        if name in _SKIPPED or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if hasattr(obj, name):
            params[name] = getattr(obj, name)
    return params


def is_json_serializable(params: dict[str, Any]) -> bool:
    """True when `params` round-trips through JSON (so the object can be rebuilt from a saved run)."""
    try:
        return json.loads(json.dumps(params)) == params
    except (TypeError, ValueError):
        return False
