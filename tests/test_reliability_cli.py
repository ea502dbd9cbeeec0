"""The command line: values that escape validation, a misused option and an unsafe checkpoint are
one line and exit 2, not a traceback."""

from __future__ import annotations

import argparse

import pytest
import torch

from ssl_emp.cli import main
from tests.reliability_helpers import one_line, pretrain

# ----------------------------------------------------------------------------- one line, not a traceback


@pytest.mark.slow
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
        (["--set", "optim.lr=1e300"], "optim.lr must be in (0, 100]"),
        (["--set", "optim.lr=.inf"], "optim.lr must be in (0, 100]"),
        (["--set", "model.backbone_kwargs.channels=[1,2]"], "model.backbone_kwargs.channels must be 4 positive"),
        (["--set", "model.backbone_kwargs.channels=[8,16,32,0]"], "model.backbone_kwargs.channels must be 4 positive"),
        (["--set", "model.backbone_kwargs.layers=[1,1]"], "model.backbone_kwargs.layers must be 4 positive"),
        (["--set", "model.backbone_kwargs.depth=3"], "rejects model.backbone_kwargs"),
    ],
)
def test_values_that_escaped_validation_are_one_line_exit_2(tmp_path, tiny_args, capsys, extra, message):
    assert pretrain(tmp_path / "bad", tiny_args, *extra) == 2
    assert message in one_line(capsys)
    assert not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------- --data-dir with digits


def test_data_dir_with_the_embedded_digits_set_is_an_error(tmp_path, tiny_args, capsys):
    assert pretrain(tmp_path / "run", tiny_args, "--data-dir", str(tmp_path)) == 2
    assert "dataset 'digits' is embedded" in one_line(capsys)


# ----------------------------------------------------------------------------- unsafe checkpoint


def test_checkpoint_error_does_not_advise_an_unsafe_load(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": argparse.Namespace(x=1)}, path)
    assert main(["eval", "knn", "--checkpoint", str(path)]) == 2
    err = one_line(capsys)
    assert "argparse.Namespace" in err and "not loaded for safety" in err
    assert "weights_only" not in err and "trust" not in err
