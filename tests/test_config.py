import dataclasses
from pathlib import Path

import pytest

from ssl_emp.config import Config, load_config
from ssl_emp.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_digits_simclr_yaml_is_the_embedded_default():
    assert dataclasses.asdict(load_config(CONFIGS / "digits_simclr.yaml")) == dataclasses.asdict(load_config(None))
    assert load_config(None).augment.preset == "digits"


def test_auto_preset_follows_data_set_and_algorithm():
    assert load_config(None, ["data.dataset=cifar10"]).augment.preset == "simclr"
    assert load_config(None, ["data.dataset=cifar10", "algorithm=moco"]).augment.preset == "mocov2"
    assert load_config(None, ["augment.preset=simclr"]).augment.preset == "simclr"
    assert dataclasses.asdict(Config())["augment"]["preset"] == "auto"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    if path.name.startswith("bench_"):  # sweep configs: a base pretrain config plus a grid
        from ssl_emp.benchmark.sweep import load_benchmark

        load_benchmark(path)
    else:
        load_config(path)


def test_set_overrides_parse_yaml_values_and_update_dicts():
    cfg = load_config(None, ["optim.lr=0.5", "data.train_subset=100", "model.backbone_kwargs.channels=[8,16,32,64]"])
    assert cfg.optim.lr == 0.5 and cfg.data.train_subset == 100
    assert load_config(None, ["optim.weight_decay=1e-4"]).optim.weight_decay == 1e-4  # YAML 1.1 reads a string
    assert cfg.model.backbone_kwargs == {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]}


@pytest.mark.parametrize(
    "override, message",
    [
        ("epochs=0", "epochs"),
        ("epochs=-3", "epochs"),
        ("model.temperature=0", "temperature"),
        ("optim.lr=-1", "optim.lr"),
        ("optim.batch_size=1", "batch_size"),
        ("data.dataset=imagenet21k", "unknown dataset 'imagenet21k'"),
        ("algorithm=byol", "unknown algorithm 'byol'"),
        ("optim.name=rmsprop", "unknown optimizer"),
        ("augment.cj_prob=1.5", "augment.cj_prob"),
        ("nonsense=1", "unknown config key 'nonsense'"),
        ("model.nonsense=1", "unknown config key 'model.nonsense'"),
        ("noequals", "key=value"),
    ],
)
def test_bad_values_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_and_invalid_config_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_choices_come_from_the_modules_that_implement_them():
    from ssl_emp.augment import PRESET_NAMES
    from ssl_emp.cli import build_parser
    from ssl_emp.data.registry import DATASETS
    from ssl_emp.models import MODELS
    from ssl_emp.runtime import DEVICES, OPTIMIZERS, TIMM_OPT

    assert OPTIMIZERS == tuple(TIMM_OPT) and set(PRESET_NAMES) >= {"auto", "supervised"}
    for override, names in (("algorithm=x", MODELS), ("data.dataset=x", DATASETS), ("optim.name=x", OPTIMIZERS),
                            ("device=x", DEVICES), ("augment.preset=x", PRESET_NAMES)):
        with pytest.raises(ConfigError) as info:
            load_config(None, [override])
        assert str(info.value).endswith(f"(choose from {', '.join(names)})"), str(info.value)
    for name in MODELS:
        assert load_config(None, [f"algorithm={name}"]).algorithm == name
    parser = build_parser()
    devices = [a.choices for sub in parser._subparsers._group_actions[0].choices.values() for a in sub._actions
               if a.dest == "device"]
    assert devices == [DEVICES] * 3  # pretrain, eval and curate --device


def test_data_set_rules_come_from_its_spec(monkeypatch):
    from ssl_emp.data.registry import DATASETS

    with pytest.raises(ConfigError, match=r"data.train_split must be 'train' \(or 'train\+unlabeled' for stl10\)"):
        load_config(None, ["data.train_split=train+unlabeled"])
    assert load_config(None, ["data.dataset=stl10", "data.train_split=train+unlabeled", "data.data_dir=/x"])
    with pytest.raises(ConfigError, match="embedded and reads no files"):
        load_config(None, ["data.data_dir=/somewhere"])
    monkeypatch.setitem(DATASETS, "digits", dataclasses.replace(DATASETS["digits"], reads_files=True))
    assert load_config(None, ["data.data_dir=/somewhere"]).data.data_dir == "/somewhere"
