"""Tasks: one module per benchmark, registered with ``@register_task``.

A name maps to its module by convention (``code-repair`` -> ``tasks/code_repair.py``);
``lm-eval:<name>`` runs any lm-evaluation-harness task (``tasks/lm_eval.py``).
"""
