"""Methods: one module per paper technique, registered with ``@register_method``.

A name maps to its module by convention (``self-repair`` -> ``methods/self_repair.py``).
"""

from harness.method import METHODS

# Entries whose module is not named after them (a family module holds several): found without
# importing every method module.
_FAMILY = {
    "args": "methods.args_search:ArgsSearchMethod",
    "saliency": "methods.attribution:SaliencyMethod",
    "input-x-gradient": "methods.attribution:InputXGradientMethod",
    "integrated-gradients": "methods.attribution:IntegratedGradientsMethod",
    "occlusion": "methods.attribution:OcclusionMethod",
    "leave-one-out": "methods.attribution:LeaveOneOutMethod",
    "lime": "methods.attribution:LimeMethod",
    "kernel-shap": "methods.attribution:KernelShapMethod",
    "attention": "methods.attribution:AttentionMethod",
    "attention-rollout": "methods.attribution:AttentionRolloutMethod",
    "random": "methods.attribution:RandomMethod",
}
for _name, _target in _FAMILY.items():
    METHODS.register_lazy(_name, _target)
