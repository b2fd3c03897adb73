"""mooframe: learn the Pareto set of a neural network, with pluggable problems, models and solvers."""

from mooframe.front import Front
from mooframe.pareto_set import FunctionalModel, ParetoSetModel
from mooframe.problem import Evaluation, Problem
from mooframe.result import ParetoSetResult
from mooframe.solve import solve
from mooframe.solver import Solver

__all__ = [
    "Evaluation",
    "Front",
    "FunctionalModel",
    "ParetoSetModel",
    "ParetoSetResult",
    "Problem",
    "Solver",
    "solve",
]
__version__ = "0.1.0"
