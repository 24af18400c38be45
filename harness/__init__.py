"""harness: an evaluation harness crossing a task registry with a method registry.

Every (task, method, model, seed, selection) cell is a run with a content-hashed spec,
an append-only sample log and results with 95% confidence intervals.
"""

__version__ = "0.1.0"
