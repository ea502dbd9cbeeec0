"""`ssl-emp export`: a checkpoint's backbone as a timm folder that reloads to identical features."""

from __future__ import annotations

import json
import re
import stat
from dataclasses import asdict
from pathlib import Path

import pytest
import timm
import torch

from ssl_emp.cli import main
from ssl_emp.config import Config
from ssl_emp.errors import ConfigError
from ssl_emp.eval.from_checkpoint import backbone_from_checkpoint
from ssl_emp.models import build_backbone, load_backbone
from tests.conftest import TINY


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A real one-epoch pretrain (CIFAR stem, the default), so BN running statistics are non-trivial."""
    out = tmp_path_factory.mktemp("pretrain") / "run"
    assert main(["pretrain", "--output-dir", str(out), *TINY, "--epochs", "1", "--set", "eval.eval_every=0",
                 "--set", "data.train_subset=128"]) == 0
    return out / "checkpoints" / "final.pt"


def _fake_checkpoint(path: Path, cifar_stem: bool) -> Path:
    """A checkpoint of an untrained model with perturbed BN statistics: faster than a pretrain."""
    cfg = Config()
    cfg.model.cifar_stem = cifar_stem
    cfg.model.backbone_kwargs = {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]}
    model = build_backbone(cfg.model.backbone, cfg.model.cifar_stem, **cfg.model.backbone_kwargs)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
    state = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    torch.save({"config": asdict(cfg), "epoch": 1, "model": state}, path)
    return path


def _features(model: torch.nn.Module, size: int = 16) -> torch.Tensor:
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.slow
def test_export_cifar_stem_round_trip(tmp_path, trained, capsys):
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(trained), "--output", str(out)]) == 0
    assert "ssl_emp.models.load_backbone" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert not list(tmp_path.glob(".export*"))  # the temp folder was renamed, nothing left beside it
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["num_classes"] == 0
    assert config["model_args"]["channels"] == [8, 16, 32, 64] and config["model_args"]["num_classes"] == 0
    assert config["ssl_emp"]["cifar_stem"] is True
    assert config["pretrained_cfg"]["input_size"] == [3, 16, 16] and config["pretrained_cfg"]["crop_pct"] == 1.0

    original, _ = backbone_from_checkpoint(str(trained))
    reloaded = load_backbone(out)
    assert not reloaded.training and reloaded.conv1.kernel_size == (3, 3)
    assert torch.equal(_features(original), _features(reloaded))
    # timm alone cannot rebuild the 3x3 stem: it refuses the weights rather than loading them wrongly.
    with pytest.raises(RuntimeError, match="size mismatch"):
        timm.create_model(f"local-dir:{out}", pretrained=True)


def test_export_timm_native_round_trip(tmp_path, capsys):
    ckpt = _fake_checkpoint(tmp_path / "fake.pt", cifar_stem=False)
    out = tmp_path / "nested" / "export"
    assert main(["export", "--checkpoint", str(ckpt), "--output", str(out)]) == 0
    assert "local-dir" in capsys.readouterr().out
    original, _ = backbone_from_checkpoint(str(ckpt))
    by_timm = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert by_timm.num_classes == 0 and by_timm.conv1.kernel_size == (7, 7)
    expected = _features(original, 32)
    assert torch.equal(expected, _features(by_timm, 32))
    assert torch.equal(expected, _features(load_backbone(out), 32))
    data = timm.data.resolve_data_config(model=by_timm)
    assert data["input_size"] == (3, 16, 16) and data["mean"] == pytest.approx([0.485, 0.456, 0.406])


def _python_blocks(readme: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)


@pytest.mark.parametrize("cifar_stem", [True, False])
def test_export_readme_says_how_to_load_and_its_code_runs(tmp_path, capsys, cifar_stem):
    """The folder's README.md holds code that loads it, with ssl-emp and with timm alone: run both."""
    ckpt = _fake_checkpoint(tmp_path / "fake.pt", cifar_stem=cifar_stem)
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(ckpt), "--output", str(out)]) == 0
    line = capsys.readouterr().out
    assert ("README.md" in line) == cifar_stem and "load_backbone" in line  # the one line says how, too
    expected = _features(backbone_from_checkpoint(str(ckpt))[0], 32)
    blocks = _python_blocks(out / "README.md")
    assert len(blocks) == 2
    for code, name in zip(blocks, ("backbone", "model" if cifar_stem else "backbone"), strict=True):
        scope: dict = {}
        exec(code, scope)  # noqa: S102 - the README's own snippet
        assert torch.equal(expected, _features(scope[name], 32))


def test_export_files_are_readable_by_others(tmp_path):
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(_fake_checkpoint(tmp_path / "fake.pt", True)), "--output", str(out)]) == 0
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {
        "README.md": 0o644, "config.json": 0o644, "model.safetensors": 0o644}


def _error(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err.strip()


def test_export_bad_inputs(tmp_path, capsys):
    ckpt = _fake_checkpoint(tmp_path / "fake.pt", cifar_stem=True)
    out = tmp_path / "export"
    code, err = _error(capsys, ["export", "--checkpoint", str(tmp_path / "missing.pt"), "--output", str(out)])
    assert code == 2 and "checkpoint not found" in err and len(err.splitlines()) == 1
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 100)
    code, err = _error(capsys, ["export", "--checkpoint", str(corrupt), "--output", str(out)])
    assert code == 2 and "corrupt" in err and len(err.splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".export*"))

    # A folder with other files is never replaced, not even with --force.
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    for extra in ([], ["--force"]):
        code, err = _error(capsys, ["export", "--checkpoint", str(ckpt), "--output", str(busy), *extra])
        assert code == 2 and "holds no earlier export" in err
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("")
    code, err = _error(capsys, ["export", "--checkpoint", str(ckpt), "--output", str(tmp_path / "file")])
    assert code == 2 and "not a folder" in err

    # An empty folder is fine; an earlier export is replaced only with --force.
    out.mkdir()
    assert main(["export", "--checkpoint", str(ckpt), "--output", str(out)]) == 0
    code, err = _error(capsys, ["export", "--checkpoint", str(ckpt), "--output", str(out)])
    assert code == 2 and "--force" in err
    other = _fake_checkpoint(tmp_path / "other.pt", cifar_stem=False)
    assert main(["export", "--checkpoint", str(other), "--output", str(out), "--force"]) == 0
    assert json.loads((out / "config.json").read_text())["ssl_emp"]["cifar_stem"] is False
    assert not list(tmp_path.glob(".export*"))


def test_load_backbone_bad_folders(tmp_path):
    ckpt = _fake_checkpoint(tmp_path / "fake.pt", cifar_stem=True)
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(ckpt), "--output", str(out)]) == 0
    with pytest.raises(ConfigError, match="not found"):
        load_backbone(tmp_path / "absent")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{")
    (broken / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes()[:100])
    with pytest.raises(ConfigError, match="not a timm model config"):
        load_backbone(broken)
    (broken / "config.json").write_text((out / "config.json").read_text())
    with pytest.raises(ConfigError, match="does not hold the weights"):
        load_backbone(broken)
    config = json.loads((out / "config.json").read_text())
    config["model_args"]["channels"] = [16, 32, 64, 128]
    (broken / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="does not hold the weights"):
        load_backbone(broken)


def test_failed_export_leaves_earlier_export_intact(tmp_path, monkeypatch, capsys):
    ckpt = _fake_checkpoint(tmp_path / "fake.pt", cifar_stem=True)
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(ckpt), "--output", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def disk_full(model, save_directory, **kwargs):
        Path(save_directory).mkdir(exist_ok=True)  # as timm does: the folder may exist
        (Path(save_directory) / "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(timm.models, "save_for_hf", disk_full)
    code, err = _error(capsys, ["export", "--checkpoint", str(ckpt), "--output", str(out), "--force"])
    assert code == 1 and "no space left" in err and len(err.splitlines()) == 1  # the machine's failure, not the input's
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "fake.pt"]  # no temp folder left
