"""Front: a Pareto set's objectives and metrics at a list of preferences (plain data, no model)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Front:
    """Objective values (minimized) and per-task metrics of a Pareto set at a list of preferences."""

    prefs: np.ndarray
    objectives: np.ndarray
    objective_names: list[str]
    metrics: dict[str, np.ndarray] = field(default_factory=dict)

    def to_csv(self, path: str | Path) -> None:
        """One row per preference: the preference, the objectives, then each metric per objective."""
        names = self.objective_names
        header = [f"pref_{n}" for n in names] + list(names)
        header += [f"{metric}_{n}" for metric in self.metrics for n in names]
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for i in range(len(self.prefs)):
                row = [*self.prefs[i], *self.objectives[i]]
                for values in self.metrics.values():
                    row.extend(values[i])
                writer.writerow([f"{v:.10g}" for v in row])
