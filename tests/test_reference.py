"""The generated reference (docs/_hooks/reference.py) describes every config key and CLI option, and
notices one that has no description."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from ssl_emp.cli import build_parser
from ssl_emp.config import Config
from ssl_emp.pruning import PARAMS
from tests.helpers import ROOT, load_script

reference = load_script(ROOT / "docs" / "_hooks" / "reference.py", "reference_hook")


def _leaf_keys(obj: object, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out += _leaf_keys(value, f"{prefix}{f.name}.") if dataclasses.is_dataclass(value) else [f"{prefix}{f.name}"]
    return out


def test_every_config_key_and_pruning_parameter_has_a_description():
    assert reference.missing_descriptions() == []
    keys = reference.config_keys()
    assert [k.key for k in keys] == _leaf_keys(Config())  # every key, whatever sections exist at build time
    page = reference.render_config()
    assert all(f"| `{k}` |" in page for k in _leaf_keys(Config()))
    assert all(f"| `{name}` |" in page for name in PARAMS)
    by_key = {k.key: k for k in keys}
    assert by_key["optim.lr"].valid == "in (0, 100]"  # ranges from config.RANGES
    assert by_key["model.queue_size"].valid.startswith("an integer in [1,")  # from MODEL_PARAMS
    assert by_key["data.dataset"].valid.startswith("one of digits")  # from CHOICES
    assert "relative to the file's folder" in by_key["data.data_dir"].meaning


def test_a_key_without_a_comment_is_reported(tmp_path):
    source = (ROOT / "ssl_emp" / "settings.py").read_text()
    line = "    knn_k: int = 200  # kNN neighbours\n"
    assert line in source
    edited = tmp_path / "settings.py"
    edited.write_text(source.replace(line, "    knn_k: int = 200\n"))
    assert reference.missing_descriptions(edited) == ["eval.knn_k"]
    # a comment block directly above a key describes it too
    edited.write_text(source.replace(line, "    # kNN neighbours\n    knn_k: int = 200\n"))
    assert reference.missing_descriptions(edited) == []


def test_every_cli_option_has_help_and_is_in_the_page():
    parser = build_parser()
    assert reference.undocumented_options(parser) == []
    page = reference.render_cli()
    for name, sub in reference._subcommands(parser).items():
        assert f"## `ssl-emp {name}`" in page
        for action in reference._options(sub):
            assert all(f"`{flag}`" in page for flag in action.option_strings)


@pytest.mark.parametrize("positional", [False, True])
def test_an_option_without_help_is_reported(positional):
    parser = build_parser()
    sub = reference._subcommands(parser)["eval"]
    sub.add_argument(*(["extra"] if positional else ["--extra"]))
    assert reference.undocumented_options(parser) == [f"eval {'extra' if positional else '--extra'}"]
    sub.add_argument("--hidden", help=argparse.SUPPRESS)  # hidden on purpose: not asked for
    assert len(reference.undocumented_options(parser)) == 1
