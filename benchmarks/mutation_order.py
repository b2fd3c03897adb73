"""pytest plugin for `benchmarks/mutation.py`: run a mutant's tests fastest first, by mutmut's recorded durations.

mutmut's fork-server runner passes a mutant's tests in no particular order and stops at the first failure, so a
mutant that a 0.01 s test kills could first sit through a 4 s one. Without `mutmut-stats.json` (mutmut's first,
recording run) the order is left alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

_STATS = Path("mutmut-stats.json")  # pytest runs in mutmut's `mutants/` folder, beside this file


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not _STATS.is_file():
        return
    durations = json.loads(_STATS.read_text()).get("duration_by_test", {})
    items.sort(key=lambda item: durations.get(item.nodeid, float("inf")))
