"""The PWE-MoE paper's experiments as data files, and `reproduce`, which runs them and reports beside the paper."""

from mooframe.reproduce.experiments import experiment_names, load_experiment, plan
from mooframe.reproduce.runner import reproduce

__all__ = ["experiment_names", "load_experiment", "plan", "reproduce"]
