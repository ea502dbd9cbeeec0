"""Dynamic data pruning for contrastive (and supervised) training: EMP and its baselines.

EMP (Xiao et al., arXiv 2408.16031), random / ε-greedy / UCB dynamic pruning (Raju et al.,
arXiv 2111.12621), InfoBatch (Qin et al., arXiv 2303.04947) and SCAN (Guo & Kankanhalli,
arXiv 2411.09126); definitions in docs/method.md.
"""

from ssl_emp.pruning.methods import METHODS, OBJECTIVES
from ssl_emp.pruning.params import METHOD_PARAMS, PARAMS, validate_params
from ssl_emp.pruning.pruner import DynamicPruner
from ssl_emp.pruning.sampler import KeptSetSource, PrunedSampler
from ssl_emp.pruning.score import emp_score, memory_strength, supervised_score
from ssl_emp.pruning.state import SIGNAL_SPECS, Signal

__all__ = [
    "METHODS", "METHOD_PARAMS", "OBJECTIVES", "PARAMS", "SIGNAL_SPECS", "DynamicPruner", "KeptSetSource",
    "PrunedSampler", "Signal", "emp_score", "memory_strength", "supervised_score", "validate_params",
]
