"""Run files and checkpoints where the user meets them: ``export --force`` and ``eval --output``
replace only what they wrote, an unwritable output is bad input found before any work, and a
checkpoint that is damaged, of another version or of the wrong dtype is one line with exit 2 —
with advice that works."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

import ssl_emp.eval.from_checkpoint
import ssl_emp.export
from ssl_emp.cli import main
from tests.helpers import resume
from tests.reliability_helpers import FAST, one_line, pretrain
from tests.test_export import _fake_checkpoint

TOO_LONG = "x" * 300  # over the 255 bytes a file name may have: fails for root as well


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished one-epoch run of the tiny model (its config differs from the built-in defaults)."""
    from tests.conftest import TINY

    out = tmp_path_factory.mktemp("runfiles") / "run"
    assert pretrain(out, TINY, *FAST) == 0
    return out


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


def _error(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    return code, one_line(capsys)


# ----------------------------------------------------------------------------- export --force


def test_export_force_replaces_only_the_export_files(tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(_fake_checkpoint(tmp_path / "a.pt", True)), "--output", str(out)]) == 0
    (out / "NOTES.md").write_text("my notes")
    (out / "eval").mkdir()
    (out / "eval" / "knn.json").write_text("{}")
    other = _fake_checkpoint(tmp_path / "b.pt", cifar_stem=False)
    assert main(["export", "--checkpoint", str(other), "--output", str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["NOTES.md", "README.md", "config.json", "eval", "model.safetensors"]
    assert (out / "NOTES.md").read_text() == "my notes" and (out / "eval" / "knn.json").read_text() == "{}"
    assert json.loads((out / "config.json").read_text())["ssl_emp"]["cifar_stem"] is False  # the new export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt", "export"]  # no temp folder left


def test_export_to_an_over_long_name_is_bad_input(tmp_path, capsys):
    ckpt = _fake_checkpoint(tmp_path / "a.pt", True)
    code, err = _error(capsys, ["export", "--checkpoint", str(ckpt), "--output", str(tmp_path / TOO_LONG)])
    assert code == 2 and "File name too long" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]


# ----------------------------------------------------------------------------- eval --output


@pytest.mark.slow
def test_eval_output_replaces_only_an_earlier_evaluation(finished, tmp_path, capsys):
    ckpt = tmp_path / "final.pt"
    shutil.copy(finished / "checkpoints" / "final.pt", ckpt)
    before = ckpt.read_bytes()
    code, err = _error(capsys, ["eval", "knn", "--checkpoint", str(ckpt), "--output", str(ckpt)])
    assert code == 2 and "not an earlier evaluation's JSON" in err
    assert ckpt.read_bytes() == before
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    code, err = _error(capsys, ["eval", "knn", "--checkpoint", str(ckpt), "--output", str(notes)])
    assert code == 2 and notes.read_text() == '{"mine": 1}'
    # An earlier evaluation's JSON is what --output exists to refresh.
    result = tmp_path / "knn.json"
    assert main(["eval", "knn", "--checkpoint", str(ckpt), "--output", str(result)]) == 0
    assert main(["eval", "knn", "--checkpoint", str(ckpt), "--output", str(result), "--k", "3"]) == 0
    assert json.loads(result.read_text())["protocol"]["k"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("where", ["under a file", "too long"])
def test_eval_unwritable_output_is_refused_before_evaluating(finished, tmp_path, capsys, monkeypatch, where):
    def never(*args, **kwargs):
        raise AssertionError("the evaluation ran before --output was checked")

    monkeypatch.setattr(ssl_emp.eval.from_checkpoint, "bank_and_test_features", never)
    ckpt = finished / "checkpoints" / "final.pt"
    output = ckpt / "knn.json" if where == "under a file" else tmp_path / TOO_LONG
    code, err = _error(capsys, ["eval", "linear", "--checkpoint", str(ckpt), "--output", str(output)])
    assert code == 2 and err.startswith("ssl-emp: error: cannot write")


@pytest.mark.slow
@pytest.mark.parametrize("per_class", [1, 3])
def test_eval_linear_on_one_image_per_class_says_what_to_do(finished, tmp_path, capsys, per_class):
    for split in ("train", "test"):
        for name in ("a", "b", "c"):
            (tmp_path / "d" / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = (torch.rand(16, 16, 3) * 255).byte().numpy()
                Image.fromarray(pixels).save(tmp_path / "d" / split / name / f"{i}.png")
    code, err = _error(capsys, ["eval", "linear", "--checkpoint", str(finished / "checkpoints" / "final.pt"),
                                "--dataset", "imagefolder", "--data-dir", str(tmp_path / "d")])
    assert code == 2 and "val_fraction" not in err and "ssl-emp eval knn" in err and "add training images" in err


# ----------------------------------------------------------------------------- checkpoint contents


def _edit(path: Path, change: Callable[[dict], None]) -> Path:
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)
    return path


def _integer_weights(ckpt: dict) -> None:
    ckpt["model"] = {k: v.long() if v.is_floating_point() else v for k, v in ckpt["model"].items()}


@pytest.mark.slow
def test_eval_refuses_integer_weights(finished, tmp_path, capsys):
    ckpt = shutil.copy(finished / "checkpoints" / "final.pt", tmp_path / "int.pt")
    _edit(Path(ckpt), _integer_weights)
    code, err = _error(capsys, ["eval", "knn", "--checkpoint", str(ckpt)])
    assert code == 2 and "torch.int64" in err and str(ckpt) in err


BROKEN = {
    "no pruner": (lambda c: c.pop("pruner"), "no 'pruner' entry"),
    "no rng": (lambda c: c.pop("rng"), "no 'rng' entry"),
    "text epoch": (lambda c: c.update(epoch="0"), "'epoch' entry must be an integer"),
    "no param groups": (lambda c: c["optimizer"].update(param_groups=[]), "'optimizer' entry does not fit"),
    "kept index out of range": (lambda c: c["pruner"].update(kept=torch.tensor([0, 10**6])), "'pruner' entry"),
    "rng of the wrong size": (lambda c: c["rng"].update(torch=torch.zeros(10, dtype=torch.uint8)), "'rng' entry"),
    "integer weights": (_integer_weights, "torch.int64"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_resume_refuses_a_broken_checkpoint(run_copy, capsys, case):
    change, expected = BROKEN[case]
    last = _edit(run_copy / "checkpoints" / "last.pt", change)
    assert resume(run_copy) == 2
    err = one_line(capsys)
    assert f"cannot resume from {last}" in err and expected in err


def test_config_of_another_version_names_the_checkpoint(run_copy, capsys):
    last = _edit(run_copy / "checkpoints" / "last.pt", lambda c: c["config"].update(future_key=1))
    for argv in (["eval", "knn", "--checkpoint", str(last)],
                 ["pretrain", "--output-dir", str(run_copy), "--resume", "--no-progress"]):
        code, err = _error(capsys, argv)
        assert code == 2 and f"checkpoint {last}" in err and "unknown config key 'future_key'" in err


# ----------------------------------------------------------------------------- resume advice


def test_resume_of_a_finished_run_without_last_pt_gives_advice_that_works(run_copy, tiny_args, capsys):
    (run_copy / "checkpoints" / "last.pt").unlink()
    assert resume(run_copy) == 2
    err = one_line(capsys)
    assert "without --resume" not in err and "choose another --output-dir" in err
    assert (run_copy / "checkpoints" / "final.pt").is_file() and (run_copy / "summary.json").is_file()


def test_resume_without_config_yaml_continues_with_the_checkpoint_config(run_copy, capsys):
    (run_copy / "config.yaml").unlink()
    assert resume(run_copy) == 0  # the built-in defaults would differ from the tiny run's config
    assert capsys.readouterr().err == ""


def test_resume_ignores_the_curate_section_which_pretraining_never_reads(run_copy, capsys):
    """curate.* (read only by `ssl-emp curate`) may differ, as after its default changed; a key that
    changes training may not."""
    assert main(["pretrain", "--output-dir", str(run_copy), "--resume", "--no-progress", "--set", "curate.eps=0.01",
                 "--set", "curate.k=7"]) == 0
    assert main(["pretrain", "--output-dir", str(run_copy), "--resume", "--no-progress", "--set", "optim.lr=0.5"]) == 2
    assert "optim.lr" in one_line(capsys)


def test_pretrain_with_an_over_long_output_dir_is_bad_input(tmp_path, tiny_args, capsys):
    assert pretrain(tmp_path / TOO_LONG, tiny_args, *FAST) == 2
    assert "File name too long" in one_line(capsys)


def test_export_force_failing_midway_leaves_the_earlier_export_and_the_users_files(tmp_path, monkeypatch, capsys):
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(_fake_checkpoint(tmp_path / "a.pt", True)), "--output", str(out)]) == 0
    (out / "NOTES.md").write_text("my notes")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_replace = ssl_emp.export.os.replace

    def failing(src, dst):  # the disk fails as the new weights move in, after the new config.json did
        if Path(src).name == "model.safetensors" and Path(src).parent.name.startswith(".export.tmp"):
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(ssl_emp.export.os, "replace", failing)
    code, err = _error(capsys, ["export", "--checkpoint", str(_fake_checkpoint(tmp_path / "b.pt", False)),
                                "--output", str(out), "--force"])
    assert code == 1 and "Input/output error" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt", "export"]
