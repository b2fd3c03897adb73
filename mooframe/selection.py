"""Choosing one trade-off from an evaluated front by a rule the user states.

Rules are short strings (the same in Python and on the command line):

    pref 0.3,0.7                                   the evaluated point at this preference
    min a | max accuracy[b]                        best on one quantity (ties: smallest sum of objectives)
    knee                                           the knee point (see `knee_scores`)
    ideal | ideal 0.05,0.1                         closest to the ideal point (default: best value of each objective)
    <any of the above> subject to accuracy[b] >= 0.8 and loss[a] <= 0.5

A quantity is a task name (its objective, minimized) or `metric[task]` for a metric the problem reports
(e.g. `accuracy[b]`; the objectives of merging problems are errors 1 - accuracy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from mooframe.front import Front
from mooframe.indicators import non_dominated
from mooframe.report import text_table

RULE_KINDS = ("pref", "min", "max", "knee", "ideal")
_CONSTRAINT = re.compile(r"^(?P<quantity>\S+?)\s*(?P<op>>=|<=)\s*(?P<bound>\S+)$")
_EXAMPLES = "e.g. 'max accuracy[a] subject to accuracy[b] >= 0.8', 'knee', 'ideal', 'pref 0.3,0.7'"


@dataclass(frozen=True)
class Constraint:
    """`quantity op bound`, with `op` one of >= and <=."""

    quantity: str
    op: str
    bound: float

    def __str__(self) -> str:
        return f"{self.quantity} {self.op} {self.bound:g}"


@dataclass(frozen=True)
class Rule:
    """A parsed selection rule: its kind, its quantity (min/max) or point (pref/ideal), and constraints."""

    kind: str
    quantity: str | None = None
    point: tuple[float, ...] | None = None
    constraints: tuple[Constraint, ...] = ()

    def __str__(self) -> str:
        head = self.kind
        if self.quantity is not None:
            head += f" {self.quantity}"
        if self.point is not None:
            head += " " + ",".join(f"{v:g}" for v in self.point)
        if self.constraints:
            head += " subject to " + " and ".join(map(str, self.constraints))
        return head


class NoFeasiblePoint(ValueError):
    """No evaluated preference meets the rule's constraints; `closest` indexes the least-violating points."""

    def __init__(self, message: str, closest: np.ndarray) -> None:
        super().__init__(message)
        self.closest = closest


@dataclass
class Selection:
    """The chosen point of `front` (row `index`) and the feasible points ranked best first (`ranking[0] == index`)."""

    front: Front
    rule: Rule
    ranking: np.ndarray

    @property
    def index(self) -> int:
        return int(self.ranking[0])

    @property
    def pref(self) -> np.ndarray:
        return self.front.prefs[self.index]

    @property
    def objectives(self) -> np.ndarray:
        return self.front.objectives[self.index]

    @property
    def metrics(self) -> dict[str, np.ndarray]:
        """Each metric's per-task values at the chosen preference."""
        return {name: values[self.index] for name, values in self.front.metrics.items()}

    def runners_up(self, k: int = 3) -> np.ndarray:
        """Row indices of the next `k` feasible points by the rule."""
        return self.ranking[1 : 1 + k]

    def summary(self, k: int = 3) -> str:
        """A table of the chosen preference and the `k` runners-up with their per-task objectives and metrics."""
        title = f"rule: {self.rule}  ({len(self.ranking)} of {len(self.front.prefs)} evaluated points feasible)"
        return title + "\n" + _format_points(self.front, self.ranking[: 1 + k], ["chosen"] + ["runner-up"] * k)


def parse_rule(text: str) -> Rule:
    """Parse a rule string (see the module docstring); ValueError saying what is wrong and what to write."""
    head, *rest = re.split(r"\s+subject\s+to\s+", text.strip(), maxsplit=1, flags=re.I)
    constraints = tuple(_parse_constraint(c) for c in re.split(r"\s+and\s+", rest[0], flags=re.I)) if rest else ()
    words = head.split()
    if not words or words[0].lower() not in RULE_KINDS:
        raise ValueError(f"rule {text!r} must start with one of {', '.join(RULE_KINDS)}; {_EXAMPLES}")
    kind, args = words[0].lower(), words[1:]
    if kind in ("min", "max"):
        if len(args) != 1:
            raise ValueError(f"rule {text!r}: '{kind}' takes one quantity, e.g. '{kind} accuracy[a]' or '{kind} a'")
        return Rule(kind, quantity=args[0], constraints=constraints)
    if kind == "knee":
        if args:
            raise ValueError(f"rule {text!r}: 'knee' takes no argument")
        return Rule(kind, constraints=constraints)
    if kind == "pref" and (not args or constraints):
        raise ValueError(f"rule {text!r}: 'pref' takes the preference and no constraint, e.g. 'pref 0.3,0.7'")
    point = parse_vector("".join(args)) if args else None
    return Rule(kind, point=point, constraints=constraints)


def parse_vector(text: str) -> tuple[float, ...]:
    """'0.3,0.7' -> (0.3, 0.7); ValueError for anything that is not comma-separated numbers."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of numbers such as 0.3,0.7") from None


def select(front: Front, rule: str | Rule) -> Selection:
    """Choose a point of `front` by `rule`; NoFeasiblePoint (a ValueError) lists the closest points if none fits."""
    rule = parse_rule(rule) if isinstance(rule, str) else rule
    feasible = _feasible(front, rule.constraints)
    candidates = np.flatnonzero(feasible)
    if candidates.size == 0:
        raise _no_feasible_point(front, rule)
    if rule.kind == "pref":
        return Selection(front, rule, np.array([_row_of(front, rule.point)]))
    if rule.kind in ("min", "max"):
        values = quantity_values(front, rule.quantity)[candidates]
        score = values if rule.kind == "min" else -values
    elif rule.kind == "knee":
        score = knee_scores(front.objectives[candidates])
    else:
        score = ideal_distances(front.objectives[candidates], rule.point)
    tie_break = front.objectives[candidates].sum(axis=1)
    return Selection(front, rule, candidates[np.lexsort((tie_break, score))])


def knee_scores(objectives: np.ndarray) -> np.ndarray:
    """Sum of the objectives normalized to [0, 1] over the non-dominated points; the knee has the smallest.

    With ideal z* and nadir z^nad of the non-dominated points, f~ = (f - z*) / (z^nad - z*). The hyperplane
    through the normalized extremes is sum_t f~_t = 1, so the point farthest below it (the knee of Das, 1999,
    and Branke et al., 2004, for two objectives) minimizes sum_t f~_t.
    """
    return _normalized(objectives).sum(axis=1)


def ideal_distances(objectives: np.ndarray, ideal: tuple[float, ...] | None = None) -> np.ndarray:
    """Euclidean distance to the ideal point, objectives normalized as in `knee_scores`.

    The ideal point defaults to the best value of each objective; a given one is in objective units.
    """
    lower, scale = _normalization(objectives)
    target = np.zeros(objectives.shape[1]) if ideal is None else (_checked_point(ideal, objectives) - lower) / scale
    return np.linalg.norm((objectives - lower) / scale - target, axis=1)


def quantity_values(front: Front, quantity: str) -> np.ndarray:
    """The values of `quantity` at every point of `front`: a task name (its objective) or `metric[task]`."""
    match = re.fullmatch(r"(?P<metric>[^\[\]]+)\[(?P<task>[^\[\]]+)\]", quantity)
    metric, task = (match["metric"], match["task"]) if match else (None, quantity)
    if task not in front.objective_names:
        raise ValueError(f"unknown task {task!r} in {quantity!r}; tasks: {', '.join(front.objective_names)}")
    column = front.objective_names.index(task)
    if metric is None:
        return front.objectives[:, column]
    if metric not in front.metrics:
        known = ", ".join(front.metrics) or "none (use a task name for its objective)"
        raise ValueError(f"unknown metric {metric!r} in {quantity!r}; metrics of this front: {known}")
    return front.metrics[metric][:, column]


def local_refinement(front: Front, index: int, k: int) -> np.ndarray:
    """Preferences that refine the grid around point `index`: k - 1 evenly spaced ones on each segment to a neighbour.

    The neighbours are the evaluated preferences nearest to it in the max-norm (its grid neighbours on a uniform
    grid: 2 for two tasks, 6 for three), so the refined points have spacing h / k for a grid of spacing h.
    """
    if k < 2:
        raise ValueError(f"refinement needs k >= 2 subdivisions, got {k}")
    center = front.prefs[index]
    distances = np.abs(front.prefs - center).max(axis=1)
    distances[index] = np.inf
    if not np.isfinite(distances).any():
        raise ValueError("refinement needs at least two evaluated preferences")
    neighbours = front.prefs[distances <= distances.min() * (1 + 1e-9)]
    steps = np.arange(1, k)[:, None, None] / k
    points = (center + steps * (neighbours - center)).reshape(-1, center.size)
    return points / points.sum(axis=1, keepdims=True)


def concat_fronts(first: Front, second: Front) -> Front:
    """The points of both fronts (same tasks and metrics), `first`'s then `second`'s."""
    if first.objective_names != second.objective_names or set(first.metrics) != set(second.metrics):
        raise ValueError("fronts of different tasks or metrics cannot be joined")
    return Front(
        prefs=np.concatenate([first.prefs, second.prefs]),
        objectives=np.concatenate([first.objectives, second.objectives]),
        objective_names=list(first.objective_names),
        metrics={name: np.concatenate([values, second.metrics[name]]) for name, values in first.metrics.items()},
    )


def _format_points(front: Front, rows: np.ndarray, labels: list[str]) -> str:
    """A plain-text table of the given rows: label, preference, objectives, then each metric per task."""
    names = front.objective_names
    header = ["", "pref", *names, *(f"{m}[{n}]" for m in front.metrics for n in names)]
    table = []
    for label, row in zip(labels, rows, strict=False):
        cells = [label, ",".join(f"{v:.3g}" for v in front.prefs[row])]
        cells += [f"{v:.4g}" for v in front.objectives[row]]
        cells += [f"{v:.4g}" for values in front.metrics.values() for v in values[row]]
        table.append(cells)
    return text_table(header, table)


def _parse_constraint(text: str) -> Constraint:
    match = _CONSTRAINT.match(text.strip())
    if match is None:
        raise ValueError(f"constraint {text!r} must read 'QUANTITY >= NUMBER' or 'QUANTITY <= NUMBER'")
    try:
        bound = float(match["bound"])
    except ValueError:
        raise ValueError(f"constraint {text!r}: bound {match['bound']!r} is not a number") from None
    return Constraint(match["quantity"], match["op"], bound)


def _feasible(front: Front, constraints: tuple[Constraint, ...]) -> np.ndarray:
    feasible = np.ones(len(front.prefs), dtype=bool)
    for constraint in constraints:
        feasible &= _violation(front, constraint) <= 0
    return feasible


def _violation(front: Front, constraint: Constraint) -> np.ndarray:
    """How far each point is from meeting `constraint`, in the quantity's units (<= 0: met)."""
    values = quantity_values(front, constraint.quantity)
    return constraint.bound - values if constraint.op == ">=" else values - constraint.bound


def _no_feasible_point(front: Front, rule: Rule, k: int = 3) -> NoFeasiblePoint:
    """The error for unmeetable constraints: closest points by total violation, each scaled by its range."""
    total = np.zeros(len(front.prefs))
    for constraint in rule.constraints:
        values = quantity_values(front, constraint.quantity)
        spread = np.ptp(values) or 1.0
        total += np.maximum(_violation(front, constraint), 0.0) / spread
    closest = np.argsort(total, kind="stable")[:k]
    conditions = " and ".join(map(str, rule.constraints))
    message = (
        f"no evaluated preference meets {conditions} ({len(front.prefs)} points evaluated); "
        f"relax the bound or refine the grid. Closest points:\n"
    )
    return NoFeasiblePoint(message + _format_points(front, closest, ["closest"] * k), closest)


def _row_of(front: Front, pref: tuple[float, ...]) -> int:
    pref_array = _checked_point(pref, front.prefs)
    matches = np.flatnonzero(np.all(np.isclose(front.prefs, pref_array, rtol=0, atol=1e-6), axis=1))
    if matches.size == 0:
        raise ValueError(
            f"preference {list(pref)} is not among the evaluated points; "
            "use ParetoSetResult.select, which evaluates it, or evaluate the front there"
        )
    return int(matches[0])


def _checked_point(point: tuple[float, ...], reference: np.ndarray) -> np.ndarray:
    values = np.asarray(point, dtype=float)
    if values.shape != (reference.shape[1],):
        raise ValueError(f"point {list(point)} has {values.size} entries; pass {reference.shape[1]}, one per task")
    return values


def _normalization(objectives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ideal point and nadir - ideal (1 where flat) of the non-dominated points."""
    nondominated = objectives[non_dominated(objectives)]
    lower = nondominated.min(axis=0)
    spread = nondominated.max(axis=0) - lower
    return lower, np.where(spread > 0, spread, 1.0)


def _normalized(objectives: np.ndarray) -> np.ndarray:
    lower, scale = _normalization(objectives)
    return (objectives - lower) / scale
