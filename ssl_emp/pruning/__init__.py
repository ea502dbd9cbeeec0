"""Dynamic data pruning for contrastive (and supervised) training: EMP and its baselines.

EMP (Xiao et al., arXiv 2408.16031), random / ε-greedy / UCB dynamic pruning (Raju et al.,
arXiv 2111.12621), InfoBatch (Qin et al., arXiv 2303.04947) and SCAN (Guo & Kankanhalli,
arXiv 2411.09126); definitions in docs/method.md. One record per method (``MethodSpec``) in
``ssl_emp.pruning.registry``.
"""

from ssl_emp.pruning.params import validate_params
from ssl_emp.pruning.pruner import DynamicPruner
from ssl_emp.pruning.registry import (
    FULL_DATA,
    METHOD_PARAMS,
    METHODS,
    OWN_RATE,
    PARAM_METHODS,
    PARAMS,
    RATELESS,
    method_spec,
    register,
    registered,
)
from ssl_emp.pruning.sampler import KeptSetSource, PrunedSampler
from ssl_emp.pruning.score import emp_score, memory_strength, supervised_score
from ssl_emp.pruning.spec import OBJECTIVES, MethodSpec, MethodState, Param
from ssl_emp.pruning.state import SIGNAL_SPECS, Signal

__all__ = [
    "FULL_DATA", "METHODS", "METHOD_PARAMS", "OBJECTIVES", "OWN_RATE", "PARAMS", "PARAM_METHODS", "RATELESS",
    "SIGNAL_SPECS", "DynamicPruner", "KeptSetSource", "MethodSpec", "MethodState", "Param", "PrunedSampler",
    "Signal", "emp_score", "memory_strength", "method_spec", "register", "registered", "supervised_score",
    "validate_params",
]
