"""Solvers: one module per method, each a `mooframe.solver.Solver`."""
