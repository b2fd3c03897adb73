"""Solvers: one module per method, each a `mooframe.solver.Solver`; EPO's LP backends beside `simplex.py`."""

from mooframe.solvers.dualproj import DualProj
from mooframe.solvers.epo import EPO, non_uniformity
from mooframe.solvers.ls import LinearScalarization
from mooframe.solvers.mgda import MGDA, min_norm_weights
from mooframe.solvers.simplex import simplex_lp
from mooframe.solvers.smooth_tchebycheff import SmoothTchebycheff
from mooframe.solvers.tchebycheff import Tchebycheff
from mooframe.solvers.torchjd_weighting import TorchJDWeighting
from mooframe.solvers.upgrad import UPGrad

__all__ = [
    "EPO",
    "MGDA",
    "DualProj",
    "LinearScalarization",
    "SmoothTchebycheff",
    "Tchebycheff",
    "TorchJDWeighting",
    "UPGrad",
    "min_norm_weights",
    "non_uniformity",
    "simplex_lp",
]
