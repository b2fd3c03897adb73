"""Pareto set models: one module per method, each a `mooframe.pareto_set.ParetoSetModel`."""
