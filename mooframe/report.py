"""Compare fronts of several methods: indicators, values at key preferences, tables, report files and a plot.

The core, `compare_fronts`, takes already evaluated fronts by label, so saved runs (`mooframe evaluate`) and
baselines evaluated in memory (`mooframe demo`) are compared the same way.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mooframe.atomic import REPORT, staged_directory
from mooframe.front import Front
from mooframe.indicators import HypervolumeResult, as_points, hypervolume, igd, igd_plus, non_dominated
from mooframe.preferences import equal_preference, uniform_grid, unit_preferences

_PREF_TOLERANCE = 1e-6  # matches preferences that went through float32
ERROR_NOTE = "objectives are errors 1 - accuracy (lower is better)"


@dataclass
class MethodSummary:
    """How one method's front scores."""

    label: str
    hypervolume: HypervolumeResult
    hypervolume_ratio: float | None  # HV / HV of the true front, when the true front is known
    igd: float | None
    igd_plus: float | None
    n_points: int
    n_non_dominated: int  # distinct non-dominated points
    at_preferences: dict[str, dict[str, np.ndarray]]  # key preference -> "objectives" and each metric, shape (T,)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Comparison:
    """Indicators of several fronts at one shared reference point."""

    objective_names: list[str]
    ref_point: np.ndarray
    ref_rule: str
    key_preferences: dict[str, np.ndarray]
    methods: list[MethodSummary]
    notes: list[str]

    def summary_rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows of the indicator table, one row per method."""
        extras = list(dict.fromkeys(key for m in self.methods for key in m.extras))
        has_truth = any(m.igd is not None for m in self.methods)
        header = ["method", "HV"] + (["HV / true", "IGD", "IGD+"] if has_truth else []) + ["non-dom.", *extras]
        rows = []
        for m in self.methods:
            hv = _fmt(m.hypervolume.value)
            if m.hypervolume.method == "approximate":
                hv += f" ± {m.hypervolume.std_error:.1g}"
            row = [m.label, hv]
            if has_truth:
                row += [_fmt(m.hypervolume_ratio), _fmt(m.igd), _fmt(m.igd_plus)]
            rows.append(row + [f"{m.n_non_dominated}/{m.n_points}", *(_fmt(m.extras.get(key)) for key in extras)])
        return header, rows

    def preference_rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows of the values at the key preferences: one row per method and preference."""
        found = dict.fromkeys(k for m in self.methods for at in m.at_preferences.values() for k in at)
        metric_names = [name for name in found if name != "objectives"]
        header = ["method", "preference", *self.objective_names]
        header += [f"{metric} {name}" for metric in metric_names for name in self.objective_names]
        rows = []
        for m in self.methods:
            for key in self.key_preferences:
                values = m.at_preferences.get(key)
                if values is None:
                    cells = ["-"] * (len(header) - 2)
                else:
                    cells = [_fmt(v) for v in values["objectives"]]
                    for metric in metric_names:
                        cells += [_fmt(v) for v in values.get(metric, [None] * len(self.objective_names))]
                rows.append([m.label, key, *cells])
        return header, rows

    def text(self) -> str:
        """The comparison as plain-text tables for the terminal."""
        return "\n\n".join([self._preamble(), text_table(*self.summary_rows()), text_table(*self.preference_rows())])

    def markdown(self, title: str = "Pareto front comparison") -> str:
        """The comparison as a Markdown report."""
        return "\n\n".join(
            [
                f"# {title}",
                self._preamble(),
                "## Indicators",
                _markdown_table(*self.summary_rows()),
                "## Values at key preferences",
                _markdown_table(*self.preference_rows()),
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the comparison."""
        return {
            "objective_names": self.objective_names,
            "ref_point": self.ref_point.tolist(),
            "ref_rule": self.ref_rule,
            "notes": self.notes,
            "key_preferences": {key: pref.tolist() for key, pref in self.key_preferences.items()},
            "methods": [
                {
                    "label": m.label,
                    "hypervolume": asdict(m.hypervolume),
                    "hypervolume_ratio": m.hypervolume_ratio,
                    "igd": m.igd,
                    "igd_plus": m.igd_plus,
                    "n_points": m.n_points,
                    "n_non_dominated": m.n_non_dominated,
                    "at_preferences": {
                        key: {name: values.tolist() for name, values in at.items()}
                        for key, at in m.at_preferences.items()
                    },
                    "extras": m.extras,
                }
                for m in self.methods
            ],
        }

    def _preamble(self) -> str:
        ref = ", ".join(f"{v:.4g}" for v in self.ref_point)
        lines = [f"Reference point ({ref}): {self.ref_rule}.", *self.notes]
        return "\n".join(f"- {line}" for line in lines)


#: the most preferences `evaluation_preferences` returns unless asked for more (each is one model evaluated).
PREFERENCE_BUDGET = 1000


def evaluation_preferences(
    n_objectives: int, n: int | None = None, max_preferences: int | None = None, refine: int = 1
) -> np.ndarray:
    """The uniform grid with `n` points per edge, plus the equal-weight preference when the grid lacks it.

    By default n = 11 for up to 3 objectives (11 and 66 preferences, the PWE-MoE grids) and n = 2 beyond
    (the T unit preferences and the equal one): the count grows linearly in T, where 11 points per edge in 8
    objectives would be 19448 models. A grid of more than `max_preferences` (default `PREFERENCE_BUDGET`),
    counting the up to (refine - 1) T (T - 1) preferences a refinement adds, is refused before it is built.
    """
    if n is None:
        n = 11 if n_objectives <= 3 else 2
    if n < 2:
        raise ValueError(f"the grid needs n >= 2 points per simplex edge, got {n}")
    budget = PREFERENCE_BUDGET if max_preferences is None else max_preferences
    count = math.comb(n + n_objectives - 2, n_objectives - 1) + 1 + (refine - 1) * n_objectives * (n_objectives - 1)
    if count > budget:
        raise ValueError(
            f"{n} points per edge on {n_objectives} objectives evaluate up to {count} preferences, more than the "
            f"budget of {budget}; pass max_preferences={count} (--max-preferences {count}) to evaluate them all, "
            "or a smaller n (--n)"
        )
    grid = uniform_grid(n_objectives, n)
    equal = equal_preference(n_objectives)
    if np.abs(grid - equal).max(axis=1).min() > _PREF_TOLERANCE:
        grid = np.vstack([grid, equal])
    return grid


def compare_fronts(
    fronts: Mapping[str, Front],
    true_front: np.ndarray | None = None,
    ref: Sequence[float] | np.ndarray | None = None,
    extras: Mapping[str, Mapping[str, Any]] | None = None,
) -> Comparison:
    """Indicators of each labelled front at one reference point shared by all.

    HV is computed at `ref`, by default the nadir of all fronts (and the true front) pushed out by 10% of
    their range: ref = nadir + 0.1 (nadir - ideal). IGD and IGD+ are reported where `true_front` is given.
    `extras` adds columns per method (e.g. {"ls": {"trainable parameters": 264, "wall time (s)": 3.2}}).
    """
    if not fronts:
        raise ValueError("no fronts to compare; pass at least one labelled Front")
    names = next(iter(fronts.values())).objective_names
    for label, front in fronts.items():
        if front.objective_names != names:
            raise ValueError(
                f"front {label!r} has objectives {front.objective_names}, the first front has {names}: "
                "compare fronts of the same problem"
            )
        as_points(front.objectives, len(names), what=f"objectives of front {label!r}")
    unknown = set(extras or {}) - set(fronts)
    if unknown:
        raise ValueError(f"extras given for unknown labels {sorted(unknown)}; labels are {list(fronts)}")
    n_objectives = len(names)
    truth = None if true_front is None else as_points(true_front, n_objectives, what="true front points")
    if ref is None:
        ref_point, ref_rule = _default_ref(fronts, truth)
    else:
        ref_point, ref_rule = np.asarray(ref, dtype=float), "given"
        if ref_point.shape != (n_objectives,):
            raise ValueError(f"reference point has {ref_point.size} entries; pass one per objective ({n_objectives})")
    true_hv = hypervolume(truth, ref_point).value if truth is not None else None
    key_prefs = {f"e{t + 1}": pref for t, pref in enumerate(unit_preferences(n_objectives))}
    key_prefs["equal"] = equal_preference(n_objectives)
    methods = []
    for label, front in fronts.items():
        hv = hypervolume(front.objectives, ref_point)
        methods.append(
            MethodSummary(
                label=label,
                hypervolume=hv,
                hypervolume_ratio=hv.value / true_hv if true_hv else None,
                igd=igd(front.objectives, truth) if truth is not None else None,
                igd_plus=igd_plus(front.objectives, truth) if truth is not None else None,
                n_points=len(front.objectives),
                n_non_dominated=int(non_dominated(np.unique(front.objectives, axis=0)).sum()),
                at_preferences=_values_at(front, key_prefs),
                extras=dict((extras or {}).get(label, {})),
            )
        )
    notes = [ERROR_NOTE] if any(_objectives_are_errors(front) for front in fronts.values()) else []
    if truth is not None:
        notes.append(f"IGD, IGD+ and HV / true are against {len(truth)} points of the true front (HV {true_hv:.6g}).")
    if any(m.hypervolume.method == "approximate" for m in methods):
        notes.append("HV marked ± is a Monte-Carlo approximation with its standard error.")
    return Comparison(list(names), ref_point, ref_rule, key_prefs, methods, notes)


def write_report(
    comparison: Comparison,
    fronts: Mapping[str, Front],
    directory: str | Path,
    true_front: np.ndarray | None = None,
    title: str = "Pareto front comparison",
    inputs: Sequence[str | Path] = (),
) -> list[Path]:
    """Write report.md, report.json, one front.csv per method (in a folder named after it) and fronts.png.

    `directory` must be new, empty or a report mooframe wrote, and not inside any of `inputs` (see
    `mooframe.atomic`); it is replaced atomically once every file is written.
    """
    directory = Path(directory)
    if ERROR_NOTE in comparison.notes:
        title = f"{title}: {ERROR_NOTE}"
    names = ["report.md", "report.json", "fronts.png", *(f"{_safe_name(label)}/front.csv" for label in fronts)]
    with staged_directory(directory, REPORT, inputs) as staging:
        (staging / "report.md").write_text(comparison.markdown(title) + "\n")
        report = {"format": REPORT.format, **comparison.to_dict()}
        (staging / "report.json").write_text(json.dumps(report, indent=2, default=_json_scalar) + "\n")
        plot_fronts(fronts, staging / "fronts.png", true_front=true_front, title=title)
        for label, front in fronts.items():
            folder = staging / _safe_name(label)
            folder.mkdir(exist_ok=True)
            front.to_csv(folder / "front.csv")
    return [directory / name for name in names]


def plot_fronts(
    fronts: Mapping[str, Front], path: str | Path, true_front: np.ndarray | None = None, title: str = ""
) -> None:
    """All fronts in one figure: a 2-D plot for 2 objectives; for 3, a 3-D overview of every front's points and
    one 3-D panel per method with its front as a surface over the preference simplex (same axes everywhere);
    parallel coordinates for more."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = next(iter(fronts.values())).objective_names
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if len(names) == 3:
        figure = _plot_3d(plt, fronts, true_front, names, colors)
        figure.suptitle(title, fontsize="medium")
    else:
        figure = _plot_flat(plt, fronts, true_front, names, colors)
        figure.axes[0].set_title(title, fontsize="medium")
    figure.tight_layout()
    figure.savefig(path, dpi=100 if len(names) == 3 else 120)
    plt.close(figure)


def _plot_flat(plt: Any, fronts: Mapping[str, Front], true_front: np.ndarray | None, names: list[str], colors: list):
    """One panel: the 2-D plane for 2 objectives, parallel coordinates for more."""
    n_objectives = len(names)
    figure = plt.figure(figsize=(6.4, 5.2) if n_objectives == 2 else (max(6.4, 1.1 * n_objectives), 4.8))
    axes = figure.add_subplot()
    if n_objectives == 2:
        if true_front is not None:
            order = np.argsort(true_front[:, 0])
            axes.plot(*true_front[order].T, ".", color="0.6", markersize=2, label="true front")
        for i, (label, front) in enumerate(fronts.items()):
            order = np.argsort(front.prefs[:, 0])
            # a line only where the points trace a set along the preferences, not for a few separate models
            style = "o-" if len(front.prefs) > n_objectives else "s"
            axes.plot(*front.objectives[order].T, style, color=colors[i % len(colors)], markersize=3, label=label)
        axes.set_xlabel(names[0])
        axes.set_ylabel(names[1])
    else:
        positions = np.arange(n_objectives)
        if true_front is not None:
            axes.plot(positions, true_front.T, color="0.6", alpha=0.1, linewidth=0.5)
            axes.plot([], [], color="0.6", label="true front")
        for i, (label, front) in enumerate(fronts.items()):
            color = colors[i % len(colors)]
            axes.plot(positions, front.objectives.T, color=color, alpha=0.5, linewidth=0.8)
            axes.plot([], [], color=color, label=label)
        axes.set_xticks(positions, names, rotation=30 if n_objectives > 6 else 0)
        axes.set_ylabel("objective value")
    axes.legend(fontsize="small")
    return figure


def _plot_3d(plt: Any, fronts: Mapping[str, Front], true_front: np.ndarray | None, names: list[str], colors: list):
    """The overview panel, then one panel per front in the same colour: a surface over the preference simplex
    where the front is a set (preferences spanning the simplex, at least half of them with their own solution),
    else its points (a few separate models, such as the experts or one model per ray)."""
    points = [f.objectives for f in fronts.values()] + ([] if true_front is None else [true_front])
    low, high = np.min([p.min(axis=0) for p in points], axis=0), np.max([p.max(axis=0) for p in points], axis=0)
    columns = min(3, len(fronts) + 1)
    rows = -(-(len(fronts) + 1) // columns)
    figure = plt.figure(figsize=(4.2 * columns, 3.8 * rows))

    def panel(index: int, name: str) -> Any:
        axes = figure.add_subplot(rows, columns, index, projection="3d")
        axes.set(xlabel=names[0], ylabel=names[1], zlabel=names[2], title=name)
        axes.set(xlim=(low[0], high[0]), ylim=(low[1], high[1]), zlim=(low[2], high[2]))
        axes.view_init(elev=25, azim=45)
        if true_front is not None:
            axes.scatter(*true_front.T, color="0.6", s=2, alpha=0.4)
        return axes

    overview = panel(1, "all fronts" + ("" if true_front is None else " (grey: true front)"))
    for i, (label, front) in enumerate(fronts.items()):
        color = colors[i % len(colors)]
        overview.scatter(*front.objectives.T, color=color, s=8)
        axes = panel(i + 2, label)
        triangles = simplex_triangles(front.prefs)
        if triangles is None or 2 * len(np.unique(front.objectives, axis=0)) < len(front.objectives):
            axes.scatter(*front.objectives.T, color=color, s=20)
        else:
            axes.plot_trisurf(*front.objectives.T, triangles=triangles, color=color, alpha=0.6, linewidth=0.2)
    return figure


def simplex_triangles(prefs: np.ndarray) -> np.ndarray | None:
    """Delaunay triangles (index triples) of 3-objective preferences over the simplex, in the (r_1, r_2) plane;
    None when they do not span it (fewer than 4 points, or all on one line)."""
    from matplotlib.tri import Triangulation

    if len(prefs) < 4 or np.linalg.matrix_rank(prefs[1:, :2] - prefs[0, :2]) < 2:
        return None
    return Triangulation(prefs[:, 0], prefs[:, 1]).triangles


def _default_ref(fronts: Mapping[str, Front], truth: np.ndarray | None) -> tuple[np.ndarray, str]:
    union = np.concatenate([front.objectives for front in fronts.values()] + ([truth] if truth is not None else []))
    ideal, nadir = union.min(axis=0), union.max(axis=0)
    spread = np.where(nadir > ideal, nadir - ideal, np.maximum(np.abs(nadir), 1.0))
    source = "all fronts and the true front" if truth is not None else "all fronts"
    return nadir + 0.1 * spread, f"nadir of {source} + 10% of their range, the same for every method"


def _values_at(front: Front, key_prefs: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Objectives and metrics of `front` at each key preference it was evaluated at."""
    found = {}
    for key, pref in key_prefs.items():
        rows = np.flatnonzero(np.abs(front.prefs - pref).max(axis=1) <= _PREF_TOLERANCE)
        if len(rows):
            found[key] = {"objectives": front.objectives[rows[0]]}
            found[key].update({name: values[rows[0]] for name, values in front.metrics.items()})
    return found


def _objectives_are_errors(front: Front) -> bool:
    accuracy = front.metrics.get("accuracy")
    return accuracy is not None and np.allclose(front.objectives, 1.0 - accuracy)


def _json_scalar(value: Any) -> Any:
    """numpy scalars in `extras` as plain numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"extras value {value!r} of type {type(value).__name__} cannot be written to JSON")


def _safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label.strip("/")) or "run"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table: the header, a rule, then the rows, columns padded to their widest cell."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)
