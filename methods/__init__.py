"""Methods: one module per paper technique, registered with ``@register_method``.

A name maps to its module by convention (``self-repair`` -> ``methods/self_repair.py``).
"""
