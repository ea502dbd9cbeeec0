"""No silent wrong data, no two writers, every failure one clear line (tiny CPU runs)."""

from __future__ import annotations

import argparse
import csv
import errno
import fcntl
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

import ssl_emp.data_folder
import ssl_emp.fileio
import ssl_emp.models
import ssl_emp.pruning.pruner
from ssl_emp.checkpoint import load_checkpoint
from ssl_emp.cli import main
from ssl_emp.config import DataConfig
from ssl_emp.data import IndexedImageFiles, IndexedImages, load_data
from ssl_emp.errors import ConfigError, RunFailed
from ssl_emp.fileio import atomic_torch_save, atomic_write_text, sweep_temp_files
from tests.test_data import _write_tree

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FAST = ["--set", "data.train_subset=128", "--set", "eval.eval_every=0", "--epochs", "1"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def _add_images(folder: Path, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        img = torch.randint(0, 256, (3, 20, 20), generator=g, dtype=torch.uint8)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"new{seed}_{i}.png")


def _pretrain(out: Path, tiny_args: list[str], *extra: str) -> int:
    return main(["pretrain", "--output-dir", str(out), *tiny_args, *extra])


# ----------------------------------------------------------------------------- 1: decoded-image cache


def test_cache_follows_files_changed_inside_class_folders(tmp_path, tiny_args):
    """The reported case: a tree trained once, 4 images added to train/a, trained again."""
    tree = tmp_path / "tree"
    _write_tree(tree, per_class=4)
    args = [*tiny_args, "--set", "data.dataset=imagefolder", "--data-dir", str(tree), "--set", "optim.batch_size=4",
            "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "eval.eval_every=0", "--epochs", "1"]
    assert _pretrain(tmp_path / "first", args) == 0
    assert json.loads((tmp_path / "first" / "summary.json").read_text())["num_samples"] == 8
    _add_images(tree / "train" / "a", 4, seed=5)
    assert _pretrain(tmp_path / "second", args) == 0
    assert json.loads((tmp_path / "second" / "summary.json").read_text())["num_samples"] == 12


def test_cache_follows_a_file_rewritten_in_place(tmp_path):
    _write_tree(tmp_path / "tree", per_class=2)
    cfg = DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "tree"), image_size=8, cache_dir=str(tmp_path / "c"))
    before = load_data(cfg).train.images.clone()
    target = tmp_path / "tree" / "train" / "b" / "1.png"
    Image.new("RGB", (20, 20), (255, 0, 0)).save(target)  # same name, new content
    os.utime(target, ns=(1, 1))  # even an mtime moved into the past is a change
    after = load_data(cfg).train.images
    assert not torch.equal(before[3], after[3]) and torch.equal(before[:3], after[:3])
    assert torch.equal(after[3], torch.tensor([255, 0, 0], dtype=torch.uint8)[:, None, None].expand(3, 8, 8))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape", "wrong_labels"])
def test_corrupt_cache_is_rebuilt_with_one_line(tmp_path, capsys, damage):
    _write_tree(tmp_path / "tree", per_class=2)
    cfg = DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "tree"), image_size=8, cache_dir=str(tmp_path / "c"))
    good = load_data(cfg)
    caches = sorted((tmp_path / "c").glob("*.pt"))
    assert len(caches) == 2  # train and test
    for cache in caches:
        if damage == "garbage":
            cache.write_bytes(os.urandom(300))
        elif damage == "truncated":
            cache.write_bytes(cache.read_bytes()[:200])
        elif damage == "wrong_shape":
            torch.save({"images": torch.zeros(4, 3, 9, 9, dtype=torch.uint8), "labels": None, "classes": None}, cache)
        else:
            torch.save({"images": torch.zeros(4, 3, 8, 8, dtype=torch.uint8), "labels": torch.tensor([0, 5, 0, 1]),
                        "classes": ["a", "b"]}, cache)
    capsys.readouterr()
    rebuilt = load_data(cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("decoding the images again" in line for line in err), err
    assert torch.equal(rebuilt.train.images, good.train.images) and torch.equal(rebuilt.test.labels, good.test.labels)
    load_data(cfg)  # the rebuilt cache is valid: silent
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- 2: one writer per folder


def _hold_lock(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "w")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def test_second_writer_gets_one_line_and_exit_2(tmp_path, tiny_args, capsys):
    out = tmp_path / "run"
    holder = _hold_lock(out)  # another process's run (a second open file description conflicts the same way)
    try:
        assert _pretrain(out, tiny_args, *FAST) == 2
        assert "another ssl-emp process is writing to" in _one_line(capsys)
        assert [p.name for p in out.iterdir()] == [".lock"]  # it wrote nothing
    finally:
        holder.close()
    # The lock file of a finished (or killed) process is no obstacle.
    assert _pretrain(out, tiny_args, *FAST) == 0
    assert (out / "checkpoints" / "final.pt").is_file()


def test_benchmark_takes_the_same_lock(tmp_path, capsys):
    out = tmp_path / "bench"
    holder = _hold_lock(out)
    try:
        code = main(["benchmark", "--config", str(CONFIGS / "bench_digits_smoke.yaml"), "--output-dir", str(out)])
    finally:
        holder.close()
    assert code == 2 and "another ssl-emp process" in _one_line(capsys)
    assert not (out / "benchmark.json").exists()


def test_bad_input_leaves_no_folder_behind(tmp_path, tiny_args, capsys):
    out = tmp_path / "bad"
    assert _pretrain(out, tiny_args, *FAST, "--set", "optim.batch_size=5000") == 2
    _one_line(capsys)
    assert not out.exists()


# ----------------------------------------------------------------------------- 3: one line, not a traceback


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "augment.mean=abc"], "augment.mean"),
        (["--set", "augment.std=[a,b,c]"], "augment.std"),
        (["--set", "augment.std=[0.2,0.2]"], "augment.std"),
        (["--seed", "99999999999999999999"], "seed must be an integer in [0, 2^63)"),
        (["--set", "optim.momentum=-3"], "optim.momentum"),
        (["--set", "model.momentum_end=abc"], "model.momentum_end"),
        (["--set", "data.in_memory=maybe"], "data.in_memory"),
        (["--set", "data.train_split=test"], "data.train_split"),
        (["--set", "eval.batch_size=0"], "eval.batch_size"),
    ],
)
def test_values_that_escaped_validation_are_one_line_exit_2(tmp_path, tiny_args, capsys, extra, message):
    assert _pretrain(tmp_path / "bad", tiny_args, *extra) == 2
    assert message in _one_line(capsys)
    assert not (tmp_path / "bad").exists()


def _archive(tmp_path: Path) -> Path:
    _write_tree(tmp_path / "tree" / "mini", per_class=20, size=32)
    path = tmp_path / "mini.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tmp_path / "tree" / "mini", arcname="mini")
    return path


def test_truncated_archive_is_one_line_exit_2(tmp_path, tiny_args, capsys):
    archive = _archive(tmp_path)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    code = _pretrain(tmp_path / "run", tiny_args, *FAST, "--set", "data.dataset=imagefolder", "--data-dir", str(archive),
                     "--set", f"data.cache_dir={tmp_path / 'c'}")
    assert code == 2
    assert f"archive {archive} is truncated or corrupt" in _one_line(capsys)


def _fail_writes_to(monkeypatch, fragment: str, after: int = 0, limit: int = 100) -> dict:
    """Make the ``after``+1-th and later files opened by ssl_emp.fileio whose name contains
    ``fragment`` fail with ENOSPC once ``limit`` bytes are written: a disk that fills up."""
    state = {"opened": 0}
    real_open = open

    class Full(io.FileIO):
        written = 0

        def write(self, data):
            self.written += len(data)
            if self.written > limit:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    def fake_open(path, mode="r", *args, **kwargs):
        if fragment in str(path) and "w" in mode:
            state["opened"] += 1
            if state["opened"] > after:
                return io.BufferedWriter(Full(path, "w"), buffer_size=16)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(ssl_emp.fileio, "open", fake_open, raising=False)
    return state


def test_full_disk_during_checkpoint_is_one_line_exit_1_and_keeps_the_last_one(tmp_path, tiny_args, capsys, monkeypatch):
    out = tmp_path / "run"
    _fail_writes_to(monkeypatch, ".last.pt.tmp", after=1)  # epoch 0's checkpoint is written, epoch 1's is not
    assert _pretrain(out, tiny_args, *FAST[:-1], "2") == 1
    err = _one_line(capsys)
    assert err == f"ssl-emp: error: cannot write {out / 'checkpoints' / 'last.pt'}: no space left on device"
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.pt"]  # no temp file left
    monkeypatch.undo()  # space freed: the run continues from its last checkpoint
    assert main(["pretrain", "--output-dir", str(out), "--resume", "--no-progress"]) == 0
    assert [json.loads(ln)["epoch"] for ln in (out / "metrics.jsonl").read_text().splitlines()] == [-1, 0, 1]


def test_full_disk_while_writing_the_pruning_table_is_one_line_exit_1(tmp_path, tiny_args, capsys, monkeypatch):
    class FullCsv:
        @staticmethod
        def writer(handle):
            class Writer:
                def writerow(self, row):
                    handle.write("index,count\n")
                    raise OSError(errno.ENOSPC, "No space left on device")

            return Writer()

    monkeypatch.setattr(ssl_emp.pruning.pruner, "csv", FullCsv)
    out = tmp_path / "run"
    assert _pretrain(out, tiny_args, *FAST) == 1
    assert _one_line(capsys) == f"ssl-emp: error: cannot write {out / 'pruning_table.csv'}: no space left on device"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert load_checkpoint(out / "checkpoints" / "final.pt")["epoch"] == 0


def test_atomic_torch_save_reports_a_full_disk_that_torch_hides(tmp_path, monkeypatch):
    """torch.save turns the ENOSPC of a write into 'RuntimeError: unexpected pos ...'."""
    target = tmp_path / "x.pt"
    atomic_torch_save({"a": torch.arange(10)}, target)
    _fail_writes_to(monkeypatch, ".x.pt.tmp", limit=1000)
    with pytest.raises(RunFailed, match=r"x\.pt: no space left on device"):
        atomic_torch_save({"a": torch.zeros(100_000)}, target)
    with pytest.raises(RunFailed, match="no space left"):
        atomic_write_text(tmp_path / "x.pt", "a" * 10_000)
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.arange(10))


# ----------------------------------------------------------------------------- 4: Ctrl-C


def _interrupt_at_call(monkeypatch, n: int) -> None:
    real = ssl_emp.models.SimCLR.forward
    calls = {"n": 0}

    def forward(self, *views, labels=None):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(self, *views, labels=labels)

    monkeypatch.setattr(ssl_emp.models.SimCLR, "forward", forward)


def test_ctrl_c_before_the_first_checkpoint_then_the_same_command_starts_clean(tmp_path, tiny_args, capsys):
    out = tmp_path / "run"
    args = [*tiny_args, *FAST[:-1], "2", "--set", "log_every=1"]
    with pytest.MonkeyPatch.context() as mp:
        _interrupt_at_call(mp, 2)  # in epoch 1
        assert _pretrain(out, args) == 130
    err = _one_line(capsys)
    assert "rerun the same command to start again" in err and "--resume" not in err
    assert main(["pretrain", "--output-dir", str(out), "--resume", "--no-progress"]) == 2
    assert "rerun the same command without --resume" in _one_line(capsys)
    assert _pretrain(out, args) == 0
    assert "stopped before its first checkpoint" in capsys.readouterr().err
    epochs = [json.loads(ln)["epoch"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [-1, 0, 1]
    rows = list(csv.reader((out / "steps.csv").read_text().splitlines()))
    assert rows[0] == ["step", "epoch", "lr", "loss"] and all(r[0].isdigit() for r in rows[1:])
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(1, 5)]  # 128 images / 64: 2 steps x 2 epochs


def test_ctrl_c_after_a_checkpoint_says_resume_and_resume_works(tmp_path, tiny_args, capsys):
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        _interrupt_at_call(mp, 3)  # epoch 2, after epoch 1's checkpoint
        assert _pretrain(out, tiny_args, *FAST[:-1], "2") == 130
    assert "the last checkpoint is intact (continue with --resume)" in _one_line(capsys)
    assert main(["pretrain", "--output-dir", str(out), "--resume", "--no-progress"]) == 0
    assert load_checkpoint(out / "checkpoints" / "final.pt")["epoch"] == 1


# ----------------------------------------------------------------------------- 5: --data-dir with digits


def test_data_dir_with_the_embedded_digits_set_is_an_error(tmp_path, tiny_args, capsys):
    assert _pretrain(tmp_path / "run", tiny_args, "--data-dir", str(tmp_path)) == 2
    assert "dataset 'digits' is embedded" in _one_line(capsys)


# ----------------------------------------------------------------------------- 6: temp files of killed writes


def test_temp_files_of_a_killed_run_are_swept_at_the_next_start(tmp_path, tiny_args):
    out = tmp_path / "run"
    assert _pretrain(out, tiny_args, *FAST[:-1], "2", "--set", "data.train_subset=64") == 0
    (out / "checkpoints" / "final.pt").unlink()
    (out / "summary.json").unlink()
    stale = [out / "checkpoints" / ".last.pt.tmp4242", out / ".summary.json.tmp99", out / ".pruning_table.csv.ab1_x.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    ckpt["epoch"] = 0  # as if killed while writing epoch 1's checkpoint
    torch.save(ckpt, out / "checkpoints" / "last.pt")
    assert main(["pretrain", "--output-dir", str(out), "--resume", "--no-progress"]) == 0
    assert not any(p.exists() for p in stale)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["final.pt", "last.pt"]


def test_sweep_in_a_shared_folder_keeps_live_writers_files(tmp_path):
    live = tmp_path / f".a.pt.tmp{os.getpid()}"
    dead = tmp_path / f".b.pt.tmp{2**22 + 1}"  # above Linux's largest pid: no such process
    keep = tmp_path / "c.pt"
    for path in (live, dead, keep):
        path.write_bytes(b"x")
    assert sweep_temp_files(tmp_path, only_dead=True) == [dead]
    assert sorted(sweep_temp_files(tmp_path)) == [live]
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


# ----------------------------------------------------------------------------- 7: too large for memory


def test_a_folder_too_large_for_memory_is_streamed_from_disk(tmp_path, capsys, monkeypatch):
    _write_tree(tmp_path / "tree", per_class=3)
    cfg = DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "tree"), image_size=8,
                     cache_dir=str(tmp_path / "c"), train_subset=4)
    in_ram = load_data(cfg)
    monkeypatch.setattr(ssl_emp.data_folder, "available_memory", lambda: 1000)  # 6 x 3 x 8 x 8 = 1152 bytes: no
    capsys.readouterr()
    streamed = load_data(DataConfig(**{**cfg.__dict__, "cache_dir": str(tmp_path / "c2")}))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("does not fit in memory; reading it from disk instead" in ln for ln in err), err
    assert isinstance(streamed.train, IndexedImageFiles) and isinstance(in_ram.train, IndexedImages)
    assert len(streamed.train) == 4  # train_subset applies to a streamed set too
    assert torch.equal(torch.stack([streamed.train[i][1] for i in range(4)]), in_ram.train.images)
    assert torch.equal(streamed.train.labels, in_ram.train.labels)
    assert not (tmp_path / "c2").exists()  # nothing decoded, nothing cached


def test_an_archive_too_large_for_memory_is_one_line_naming_in_memory_false(tmp_path, monkeypatch):
    archive = _archive(tmp_path)
    monkeypatch.setattr(ssl_emp.data_folder, "available_memory", lambda: 1000)
    with pytest.raises(ConfigError, match=r"does not fit in memory: unpack it .* data\.in_memory=false"):
        load_data(DataConfig(dataset="imagefolder", data_dir=str(archive), image_size=8, cache_dir=str(tmp_path / "c")))


# ----------------------------------------------------------------------------- 8: messages


def test_random_bytes_archive_is_not_reported_as_missing(tmp_path):
    path = tmp_path / "data.tar.gz"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ConfigError) as info:
        load_data(DataConfig(dataset="imagefolder", data_dir=str(path), cache_dir=str(tmp_path / "c")))
    assert "not found" not in str(info.value) and "is a file but not a .tar/.tar.gz archive" in str(info.value)


@pytest.mark.parametrize("archive", [False, True])
def test_decode_error_names_the_whole_path_and_no_buffer(tmp_path, archive):
    _write_tree(tmp_path / "tree", per_class=1, splits=("train",))
    (tmp_path / "tree" / "train" / "b" / "broken.png").write_bytes(b"not an image at all")
    (tmp_path / "tree" / "train" / "a" / "cut.png").write_bytes((tmp_path / "tree" / "train" / "a" / "0.png").read_bytes()[:60])
    source = tmp_path / "tree"
    if archive:
        source = tmp_path / "tree.tar"
        with tarfile.open(source, "w") as tar:
            tar.add(tmp_path / "tree", arcname="tree")
    cfg = DataConfig(dataset="imagefolder", data_dir=str(source), image_size=8, cache_dir=str(tmp_path / "c"))
    with pytest.raises(ConfigError) as info:
        load_data(cfg)
    message = str(info.value)
    assert "train/a/cut.png" in message and "BytesIO" not in message and "<" not in message, message
    (tmp_path / "tree" / "train" / "a" / "cut.png").unlink()
    if archive:
        with tarfile.open(source, "w") as tar:
            tar.add(tmp_path / "tree", arcname="tree")
    with pytest.raises(ConfigError, match=r"train/b/broken\.png: not an image in a known format$"):
        load_data(cfg)


def test_checkpoint_error_does_not_advise_an_unsafe_load(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": argparse.Namespace(x=1)}, path)
    assert main(["eval", "knn", "--checkpoint", str(path)]) == 2
    err = _one_line(capsys)
    assert "argparse.Namespace" in err and "not loaded for safety" in err
    assert "weights_only" not in err and "trust" not in err
