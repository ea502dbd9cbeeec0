"""Image folders where users meet them (``ssl-emp pretrain``; in a child process where only one shows
it: a DataLoader worker, Pillow's warnings on the real stderr, a user who may not read a file): linked
folders are followed, and a link loop, a broken link, an unreadable folder or image, an image over
Pillow's pixel limit or a corrupt image read by a worker is one line naming it, exit 2; names that
are not UTF-8 work as they do in an archive; Pillow's warnings are no noise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from ssl_emp.cli import main
from ssl_emp.config import DataConfig
from ssl_emp.data import load_data
from ssl_emp.run.checkpoint import load_checkpoint
from tests.conftest import TINY
from tests.helpers import ROOT, child_env
from tests.reliability_helpers import one_line
from tests.test_data import _write_tree

# root reads every file: the child drops that power (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) to meet a
# file or folder it may not read as any other user would.
_NO_ROOT_READS = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                  "--inh-caps=-dac_override,-dac_read_search"]


def _args(tmp_path: Path, data: Path) -> list[str]:
    """One epoch of the tiny model on the image folder ``data``, without the kNN's "lowering k" note."""
    return [*TINY, "--epochs", "1", "--set", "optim.batch_size=4", "--set", "eval.eval_every=0", "--set", "eval.knn_k=2",
            "--set", "data.dataset=imagefolder", "--data-dir", str(data), "--set", f"data.cache_dir={tmp_path / 'c'}"]


def _pretrain(tmp_path: Path, data: Path, *extra: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``ssl-emp pretrain`` on the image folder ``data``, in a child process."""
    cmd = [*prefix, sys.executable, "-m", "ssl_emp", "pretrain", "--output-dir", str(tmp_path / "run"),
           *_args(tmp_path, data), *extra]
    return subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)


def _in_process(tmp_path: Path, data: Path) -> int:
    """``ssl-emp pretrain`` on the image folder ``data``, in this process; the exit code."""
    return main(["pretrain", "--output-dir", str(tmp_path / "run"), *_args(tmp_path, data)])


def _refused(proc: subprocess.CompletedProcess) -> str:
    """The one line of a run refused as bad input (exit 2)."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def _trained(tmp_path: Path) -> tuple[list[str], int]:
    """The classes and the number of training images of the finished run."""
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    return load_checkpoint(tmp_path / "run" / "checkpoints" / "final.pt")["classes"], summary["num_samples"]


def _no_root_reads() -> tuple[str, ...]:
    """The command prefix under which this test's user cannot read a mode-000 file."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None or subprocess.run([*_NO_ROOT_READS, "true"]).returncode != 0:
        pytest.skip("running as root, which reads every file, without setpriv to drop that power")
    return tuple(_NO_ROOT_READS)


# ----------------------------------------------------------------------------- links and permissions


def test_linked_train_and_class_folders_are_read_where_they_are_linked(tmp_path, capsys):
    """The reported case: a train/ that is a link trained on the test images as one class "test"."""
    _write_tree(tmp_path / "elsewhere", classes=("a", "b"), per_class=4, splits=("train",))
    _write_tree(tmp_path / "more", classes=("c",), per_class=4, splits=("train",))
    (tmp_path / "elsewhere" / "train" / "c").symlink_to(tmp_path / "more" / "train" / "c")
    _write_tree(tmp_path / "d", classes=("a", "b", "c"), per_class=1, splits=("test",))
    (tmp_path / "d" / "train").symlink_to(tmp_path / "elsewhere" / "train")
    assert _in_process(tmp_path, tmp_path / "d") == 0 and capsys.readouterr().err == ""
    assert _trained(tmp_path) == (["a", "b", "c"], 12)


@pytest.mark.parametrize("link, target, message", [
    ("train/a/up", "..", "link loop in {d}: {d}/train/a/up leads back to {d}/train, which holds it"),
    ("train/c", "/nonexistent/c", "cannot read {d}/train/c (a link to /nonexistent/c): No such file or directory"),
    ("train/a/x.png", "x.png", "cannot read {d}/train/a/x.png (a link to x.png): Too many levels of symbolic links"),
])
def test_a_link_loop_or_a_broken_link_is_one_line_exit_2(tmp_path, capsys, link, target, message):
    d = tmp_path / "d"
    _write_tree(d, per_class=2)
    (d / link).symlink_to(target)
    assert _in_process(tmp_path, d) == 2
    assert one_line(capsys) == f"ssl-emp: error: {message.format(d=d)}"


@pytest.mark.slow
@pytest.mark.parametrize("what, message", [("train/b", "cannot read folder {}: Permission denied"),
                                           ("train/b/1.png", "cannot read image {}: Permission denied")])
def test_an_unreadable_folder_or_image_is_one_line_exit_2(tmp_path, what, message):
    """An unreadable class folder was dropped without a word; an unreadable image said "cannot write", exit 1."""
    d = tmp_path / "d"
    _write_tree(d, per_class=2)
    (d / what).chmod(0)
    try:
        proc = _pretrain(tmp_path, d, prefix=_no_root_reads())
    finally:
        (d / what).chmod(0o755)
    assert _refused(proc) == f"ssl-emp: error: {message.format(d / what)}"


# ----------------------------------------------------------------------------- names and images


def test_names_that_are_not_utf8_train_as_in_an_archive(tmp_path, capsys):
    d = tmp_path / "d"
    _write_tree(d, classes=("b",), per_class=2, splits=("train",))
    shutil.copytree(d / "train" / "b", d / "train" / os.fsdecode(b"caf\xe9"))  # Latin-1, as old systems wrote it
    shutil.copy(d / "train" / "b" / "0.png", d / "train" / "b" / os.fsdecode(b"\xff\xfe.png"))
    with tarfile.open(tmp_path / "d.tar", "w") as tar:
        tar.add(d, arcname="d")
    archive = load_data(DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "d.tar"), cache_dir=str(tmp_path / "c")))
    assert _in_process(tmp_path, d) == 0 and capsys.readouterr().err == ""
    assert _trained(tmp_path) == (archive.train.classes, len(archive.train)) == (["b", os.fsdecode(b"caf\xe9")], 5)


@pytest.mark.slow
def test_a_corrupt_image_read_by_a_worker_is_its_own_one_line(tmp_path):
    d = tmp_path / "d"
    _write_tree(d, per_class=2)
    (d / "train" / "a" / "9.png").write_bytes(b"not an image")
    proc = _pretrain(tmp_path, d, "--set", "data.in_memory=false", "--set", "data.num_workers=1")
    assert _refused(proc) == f"ssl-emp: error: cannot decode image {d}/train/a/9.png: not an image in a known format"


@pytest.mark.slow
def test_a_palette_image_with_transparency_trains_without_warnings(tmp_path):
    d = tmp_path / "d"
    _write_tree(d, per_class=2)
    image = Image.new("P", (20, 20))
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    image.save(d / "train" / "a" / "palette.png", transparency=bytes([0, 128, 255]))  # alpha per palette entry
    proc = _pretrain(tmp_path, d)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-3000:]
    assert _trained(tmp_path)[1] == 5


def test_an_image_over_the_pixel_limit_is_one_line_naming_the_limit(tmp_path, capsys):
    """100 megapixels: Pillow only warned (in two lines) and the whole image was decoded."""
    d = tmp_path / "d"
    _write_tree(d, per_class=2)
    Image.new("1", (10_000, 10_000)).save(d / "train" / "a" / "huge.png")  # 1 bit per pixel: 12 KB
    assert _in_process(tmp_path, d) == 2
    assert one_line(capsys) == (
        f"ssl-emp: error: cannot decode image {d}/train/a/huge.png: 100,000,000 pixels over the limit of 89,478,485 "
        "pixels (PIL.Image.MAX_IMAGE_PIXELS, against decompression bombs)")
