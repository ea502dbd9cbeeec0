"""Encoders: a timm backbone by name, a lightly projection head or a classifier, and the objective.

One model per module (``simclr``, ``moco``, ``supervised``), the encoder in ``backbone``, the
contract the training loop relies on in ``contract`` (``PretrainModel``) and the models by name,
with the table of ``model.*`` keys, in ``registry``.
"""

from ssl_emp.models.backbone import build_backbone, load_backbone, state_dict_mismatch
from ssl_emp.models.contract import CONTRASTIVE_SIGNALS, ModelClass, PretrainModel
from ssl_emp.models.moco import KeyQueue, MoCo
from ssl_emp.models.registry import MODEL_PARAMS, MODELS, build_model, model_keys, validate_model_config
from ssl_emp.models.simclr import SimCLR
from ssl_emp.models.supervised import Supervised

__all__ = [
    "CONTRASTIVE_SIGNALS", "MODELS", "MODEL_PARAMS", "KeyQueue", "ModelClass", "MoCo", "PretrainModel", "SimCLR",
    "Supervised", "build_backbone", "build_model", "load_backbone", "model_keys", "state_dict_mismatch",
    "validate_model_config",
]
