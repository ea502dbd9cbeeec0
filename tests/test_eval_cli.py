"""`ssl-emp eval knn|linear` on a checkpoint from a short digits pretrain."""

import json

import pytest
import torch
from PIL import Image

from ssl_emp.cli import main
from ssl_emp.config import EvalConfig


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from tests.conftest import TINY

    out = tmp_path_factory.mktemp("pretrain") / "run"
    assert main(["pretrain", "--output-dir", str(out), *TINY, "--epochs", "1", "--set", "eval.eval_every=0"]) == 0
    return out / "checkpoints" / "final.pt", json.loads((out / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["knn", "linear"])
def test_eval_round_trip(tmp_path, checkpoint, protocol, capsys):
    ckpt, summary = checkpoint
    out = tmp_path / f"{protocol}.json"
    assert main(["eval", protocol, "--checkpoint", str(ckpt), "--output", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{protocol} top-1") and len(line.splitlines()) == 1
    result = json.loads(out.read_text())
    assert result["dataset"] == "digits" and result["num_test"] == 360 and 0.3 < result["top1"] <= 1.0
    assert result["top5"] >= result["top1"]
    if protocol == "knn":
        # Same functions, same features as the pretrain monitor: the same number.
        assert result["top1"] == pytest.approx(summary["knn_top1"])
        defaults = EvalConfig()
        assert result["protocol"]["k"] == defaults.knn_k and result["protocol"]["temperature"] == defaults.knn_temperature
    else:
        assert "chosen_weight_decay" in result["protocol"] and result["protocol"]["val_fraction"] > 0


@pytest.mark.slow
def test_eval_knn_defaults_come_from_the_checkpoint_config(tmp_path, checkpoint):
    ckpt, _ = checkpoint
    saved = torch.load(ckpt, weights_only=True)
    saved["config"]["eval"].update(knn_k=7, knn_temperature=0.25)
    torch.save(saved, tmp_path / "k7.pt")

    def protocol(*flags: str) -> dict:
        out = tmp_path / "knn.json"
        assert main(["eval", "knn", "--checkpoint", str(tmp_path / "k7.pt"), "--output", str(out), *flags]) == 0
        return json.loads(out.read_text())["protocol"]

    assert (protocol()["k"], protocol()["temperature"]) == (7, 0.25)
    assert (protocol("--k", "3")["k"], protocol("--k", "3")["temperature"]) == (3, 0.25)
    assert protocol("--temperature", "0.5")["temperature"] == 0.5 and protocol("--temperature", "0.5")["k"] == 7


def _error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.slow
def test_eval_bad_inputs(tmp_path, checkpoint, capsys):
    ckpt, _ = checkpoint
    code, err = _error(capsys, ["eval", "knn", "--checkpoint", str(tmp_path / "missing.pt")])
    assert code == 2 and "checkpoint not found" in err

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 100)
    code, err = _error(capsys, ["eval", "knn", "--checkpoint", str(corrupt)])
    assert code == 2 and "corrupt" in err and len(err.splitlines()) == 1

    other = torch.load(ckpt, weights_only=True)
    other["config"]["model"]["backbone_kwargs"]["channels"] = [16, 32, 64, 128]
    torch.save(other, tmp_path / "other.pt")
    code, err = _error(capsys, ["eval", "linear", "--checkpoint", str(tmp_path / "other.pt")])
    assert code == 2 and "does not match backbone" in err

    # k above the bank size is lowered to it, as the pretrain monitor does, and said on stderr.
    code, err = _error(capsys, ["eval", "knn", "--checkpoint", str(ckpt), "--k", "5000"])
    assert code == 0 and err.startswith("ssl-emp: kNN k=5000 is larger than the") and len(err.splitlines()) == 1

    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(4):
        Image.fromarray((torch.rand(8, 8, 3) * 255).byte().numpy()).save(flat / f"{i}.png")
    code, err = _error(capsys, ["eval", "knn", "--checkpoint", str(ckpt), "--dataset", "imagefolder", "--data-dir", str(flat)])
    assert code == 2 and "labelled" in err
