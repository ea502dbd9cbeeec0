"""The models' registry and contract: names, the one table of ``model.*`` keys, declared signals."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ssl_emp.config import ModelConfig, load_config
from ssl_emp.errors import ConfigError
from ssl_emp.models import (
    MODEL_PARAMS,
    MODELS,
    MoCo,
    PretrainModel,
    SimCLR,
    Supervised,
    build_model,
    model_keys,
    validate_model_config,
)
from ssl_emp.models.contract import contrastive_outputs
from ssl_emp.pruning.state import SIGNAL_SPECS

TINY = dict(backbone_kwargs={"layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8]}, proj_hidden_dim=16, proj_out_dim=8,
            queue_size=32)


def _one_line(call, needle: str) -> str:
    with pytest.raises(ConfigError) as info:
        call()
    text = str(info.value)
    assert needle in text and "\n" not in text, text
    return text


def test_registry_names_the_models_and_their_keys():
    assert MODELS == {"simclr": SimCLR, "moco": MoCo, "supervised": Supervised}
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    for name, cls in MODELS.items():
        keys = model_keys(name)
        assert keys[:2] == ("backbone", "backbone_kwargs") and set(keys) <= set(MODEL_PARAMS) <= fields
        assert set(cls.signals) <= set(SIGNAL_SPECS) - {"loss"}, f"{name} declares a signal the pruner does not know"
    assert model_keys("supervised") == ("backbone", "backbone_kwargs")
    assert "queue_size" in model_keys("moco") and "queue_size" not in model_keys("simclr")
    _one_line(lambda: model_keys("byol"), "unknown algorithm 'byol' (choose from simclr, moco, supervised)")


@pytest.mark.parametrize("algorithm, key, value, message", [
    ("simclr", "temperature", 0, "model.temperature must be > 0, got 0"),
    ("moco", "temperature", float("nan"), "model.temperature must be > 0, got nan"),
    ("simclr", "proj_out_dim", 0, "model.proj_out_dim must be an integer in [1, 16384], got 0"),
    ("moco", "proj_hidden_dim", 2.5, "model.proj_hidden_dim must be an integer in [1, 16384], got 2.5"),
    ("moco", "queue_size", True, "model.queue_size must be an integer in [1, 1048576], got True"),
    ("moco", "momentum_start", 1.5, "model.momentum_start must be in [0, 1], got 1.5"),
    ("moco", "momentum_end", -0.1, "model.momentum_end must be in [0, 1], got -0.1"),
    ("supervised", "backbone", "", "model.backbone must be a timm model name, got ''"),
    ("simclr", "backbone_kwargs", [1], "model.backbone_kwargs must be a mapping, got [1]"),
])
def test_a_bad_model_key_is_one_line_naming_key_value_and_range(algorithm, key, value, message):
    cfg = dataclasses.replace(ModelConfig(**TINY), **{key: value})
    _one_line(lambda: validate_model_config(algorithm, cfg), message)
    _one_line(lambda: build_model(algorithm, cfg, num_classes=10), message)  # the same check, before building


def test_config_validation_asks_the_models_table():
    _one_line(lambda: load_config(None, ["algorithm=moco", "model.momentum_start=0.999", "model.momentum_end=0.99"]),
              "model.momentum_start must be <= model.momentum_end, got 0.999 > 0.99")
    _one_line(lambda: load_config(None, ["model.temperature=-1"]), "model.temperature must be > 0, got -1")
    # A key the chosen model does not read is not checked: the config may switch algorithm alone.
    assert load_config(None, ["algorithm=supervised", "model.temperature=-1"]).model.temperature == -1
    assert load_config(None, ["algorithm=simclr", "model.queue_size=0"]).model.queue_size == 0


@pytest.mark.parametrize("algorithm", list(MODELS))
def test_every_model_meets_the_contract_and_returns_exactly_its_signals(algorithm):
    torch.manual_seed(0)
    model = build_model(algorithm, ModelConfig(**TINY), num_classes=3)
    assert isinstance(model, PretrainModel) and isinstance(model.backbone, torch.nn.Module)
    views = [torch.randn(4, 3, 16, 16) for _ in range(model.num_views)]
    out = model(*views, labels=torch.tensor([0, 1, 2, 0]) if model.needs_labels else None)
    assert set(out) == {"loss", *model.signals}
    assert out["loss"].shape == (4,) and out["loss"].requires_grad
    assert all(out[s].shape == (4,) and not out[s].requires_grad for s in model.signals)


def test_a_plain_loss_pair_still_gives_every_declared_signal():
    loss, align = torch.rand(5, requires_grad=True), torch.rand(5)
    out = contrastive_outputs((loss, align))
    assert set(out) == {"loss", *SimCLR.signals}
    assert torch.equal(out["loss_12"], loss) and torch.equal(out["loss_21"], loss) and not out["loss_12"].requires_grad


def test_supervised_needs_classes():
    _one_line(lambda: build_model("supervised", ModelConfig(**TINY), num_classes=1), "at least 2 classes")
