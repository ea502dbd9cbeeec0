"""ssl-emp: contrastive self-supervised pretraining with dynamic data pruning (EMP)."""

__version__ = "0.1.0"
