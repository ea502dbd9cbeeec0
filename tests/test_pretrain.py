"""End-to-end `ssl-emp pretrain` on tiny digits runs (in-process, CPU)."""

import json

import pytest
import torch
import yaml

import ssl_emp.models
from ssl_emp.cli import main
from ssl_emp.run.checkpoint import load_checkpoint
from tests.helpers import Interrupt, assert_same_table, interrupt_after, resume


def _run(tmp_path, name, tiny_args, *extra):
    out = tmp_path / name
    code = main(["pretrain", "--output-dir", str(out), *tiny_args, *extra])
    return code, out


@pytest.mark.slow
def test_short_digits_run_learns_and_writes_its_outputs(tmp_path, tiny_args, capsys):
    code, out = _run(tmp_path, "run", tiny_args, "--epochs", "4", "--set", "optim.lr=0.3", "--set", "eval.eval_every=2")
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["knn_top1"] > summary["knn_top1_epoch0"] + 0.05
    assert summary["images_seen"] == 4 * 1437 and summary["achieved_rate"] == 0.0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [ln["epoch"] for ln in lines] == [-1, 0, 1, 2, 3]
    assert "knn_top1" in lines[2] and "knn_top1" in lines[4] and "knn_top1" not in lines[1]
    assert (out / "config.yaml").is_file() and (out / "steps.csv").is_file()
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "checkpoints" / "final.pt").is_file()
    assert "final kNN top-1" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("algorithm, method", [("simclr", "full"), ("moco", "emp"), ("simclr", "emp"), ("moco", "full"),
                                               ("supervised", "emp")])
def test_resume_equals_uninterrupted_run(tmp_path, tiny_args, algorithm, method):
    common = [*tiny_args, "--set", f"algorithm={algorithm}", "--set", "log_every=1", "--set", "data.train_subset=256",
              "--set", "eval.eval_every=0", "--method", method, "--pruning-rate", "0.5" if method != "full" else "0"]
    assert _run(tmp_path, "straight", common, "--epochs", "3")[0] == 0
    # Interrupt the second run after two epochs (an exception from inside the step), then resume.
    cls = {"simclr": ssl_emp.models.SimCLR, "moco": ssl_emp.models.MoCo, "supervised": ssl_emp.models.Supervised}[algorithm]
    steps_per_epoch = 4 if method == "full" else 2  # 256 images (x 0.5 kept for emp) / batch 64
    with interrupt_after(2 * steps_per_epoch, cls), pytest.raises(Interrupt):
        _run(tmp_path, "split", common, "--epochs", "3")
    assert load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")["epoch"] == 1
    assert resume(tmp_path / "split") == 0

    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "final.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "final.pt")
    for key in a["model"]:
        if key != "_extra_state":
            assert torch.equal(a["model"][key], b["model"][key]), key
    assert_same_table(b["pruner"]["table"], a["pruner"]["table"])
    assert a["pruner"]["sample_visits"] == b["pruner"]["sample_visits"]
    if algorithm == "moco":
        queue = a["model"]["_extra_state"]["queue"]
        assert queue.shape == (4096, 32), "the MoCo queue must be in the checkpoint"
        assert torch.equal(queue, b["model"]["_extra_state"]["queue"])
    straight = [json.loads(ln) for ln in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    split = [json.loads(ln) for ln in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [ln["epoch"] for ln in split] == [ln["epoch"] for ln in straight]
    assert [ln.get("loss") for ln in split] == [ln.get("loss") for ln in straight]
    assert (tmp_path / "split" / "steps.csv").read_text() == (tmp_path / "straight" / "steps.csv").read_text()


def test_existing_run_is_never_overwritten(tmp_path, tiny_args, capsys):
    args = [*tiny_args, "--set", "data.train_subset=128", "--set", "eval.eval_every=0", "--epochs", "1"]
    assert _run(tmp_path, "run", args)[0] == 0
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    assert _run(tmp_path, "run", args)[0] == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, tiny_args, capsys):
    real = ssl_emp.models.simclr.info_nce_per_sample
    calls = {"n": 0}

    def poisoned(z1, z2, temperature, gather_distributed=False):
        calls["n"] += 1
        loss, align = real(z1, z2, temperature, gather_distributed)
        return (loss * float("nan") if calls["n"] > 2 else loss), align  # NaN from epoch 2 on

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ssl_emp.models.simclr, "info_nce_per_sample", poisoned)
        code, out = _run(tmp_path, "nan", tiny_args, "--epochs", "3", "--set", "data.train_subset=128",
                         "--set", "eval.eval_every=0", "--set", "eval.knn_k=20")  # k < bank: no k notice
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert "non-finite loss at epoch 2" in err and len(err.splitlines()) == 1
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "data.dataset=mnist"], "unknown dataset 'mnist'"),
        (["--set", "model.backbone=resnet_nonexistent"], "unknown backbone 'resnet_nonexistent'"),
        (["--set", "model.wings=2"], "unknown config key 'model.wings'"),
        (["--set", "data.dataset=cifar10", "--data-dir", "/nonexistent/cifar"], "not found"),
        (["--epochs", "0"], "must be > 0"),
        (["--set", "model.temperature=-1"], "temperature must be > 0"),
        (["--set", "optim.batch_size=5000"], "larger than the data set"),
        (["--config", "/nonexistent.yaml"], "config file not found"),
        (["--method", "magic"], "magic"),
        (["--method", "emp", "--pruning-rate", "0.99"], "0.99"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, tiny_args, capsys, extra, message):
    out = tmp_path / "bad"
    code = main(["pretrain", "--output-dir", str(out), *tiny_args, *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1, err
    assert not (out / "checkpoints").exists()


@pytest.mark.slow
def test_cifar10_short_run_from_shared_archive(tmp_path, shared_cifar, capsys):
    code = main([
        "pretrain", "--config", "configs/cifar10_simclr_cpu.yaml", "--output-dir", str(tmp_path / "c"),
        "--data-dir", str(shared_cifar), "--epochs", "1", "--no-progress",
        "--set", "data.train_subset=1024", "--set", "data.test_subset=512", "--set", f"data.cache_dir={tmp_path / 'cache'}",
    ])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["num_samples"] == 1024 and 0.1 < summary["knn_top1"] <= 1.0


# Each at a learning rate of its usual range (LARS's trust ratio makes 0.01 a near no-op: its loss did
# not move past the augmentation noise in 6 epochs), over four epochs of 4 steps.
@pytest.mark.slow
@pytest.mark.parametrize("optimizer, lr", [("lars", 3.0), ("adamw", 0.05)])
def test_other_optimizers_train(tmp_path, tiny_args, optimizer, lr):
    code, out = _run(tmp_path, optimizer, tiny_args, "--epochs", "4", "--set", f"optim.name={optimizer}",
                     "--set", f"optim.lr={lr}", "--set", "data.train_subset=256", "--set", "eval.eval_every=0")
    assert code == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["loss"] < lines[1]["loss"]  # it trained
    ckpt = load_checkpoint(out / "checkpoints" / "final.pt")
    assert ckpt["optimizer"]["state"], f"{optimizer} saved no optimizer state in the checkpoint"


@pytest.mark.slow
def test_supervised_run_reports_test_accuracy_and_entropy(tmp_path, tiny_args, capsys):
    """The positive control through the CLI: cross-entropy on labels, EMP scored on loss + entropy."""
    out = tmp_path / "sup"
    code = main(["pretrain", *tiny_args, "--set", "algorithm=supervised", "--epochs", "4", "--method", "emp",
                 "--pruning-rate", "0.5", "--set", "eval.eval_every=0", "--output-dir", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algorithm"] == "supervised" and summary["test_top1"] > 0.3  # chance: 0.1
    assert summary["entropy_repeatability"] is not None and summary["align_repeatability"] is None
    header = (out / "pruning_table.csv").read_text().splitlines()[0].split(",")
    assert "entropy" in header
    assert "test top-1" in capsys.readouterr().out
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["augment"]["preset"] == "digits"  # digits keeps its own views: no flips


def test_supervised_needs_labels_one_line_exit_2(tmp_path, tiny_args, capsys):
    from PIL import Image

    tree = tmp_path / "flat"
    tree.mkdir()
    for i in range(8):  # images at the top level: an unlabelled folder
        Image.new("RGB", (16, 16), (i * 30, 0, 0)).save(tree / f"{i}.png")
    code = main(["pretrain", *tiny_args, "--set", "algorithm=supervised", "--set", "data.dataset=imagefolder",
                 "--data-dir", str(tree), "--set", "optim.batch_size=4", "--epochs", "1",
                 "--output-dir", str(tmp_path / "run"), "--set", f"data.cache_dir={tmp_path / 'cache'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "labelled" in err[0]
