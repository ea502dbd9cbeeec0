"""MkDocs hook: the Reference pages, generated from the code at every build, so they cannot drift.

- ``reference/config.md``: every config key with its type, default, valid values and meaning. The
  keys, types and defaults are the dataclasses of ``ssl_emp/settings.py``; a key's meaning is the
  comment on its line there, or the comment block directly above it (read with ``tokenize``), so it
  stays where developers write it; a ``model.*`` key's meaning and range come from the models'
  table (``MODEL_PARAMS``), the pruning parameters from the methods' (``PARAMS``), other ranges from
  ``ssl_emp.config.RANGES`` and ``CHOICES``.
- ``reference/cli.md``: every subcommand and option, from ``ssl_emp.cli.build_parser()``.

A key or an option without a description fails the build (and ``tests/test_reference.py``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import io
import json
import tokenize
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ROOT / "ssl_emp" / "settings.py"
PAGES = {"reference/config.md": "render_config", "reference/cli.md": "render_cli"}


# ----------------------------------------------------------------------------- config keys
def field_comments(source: Path = SETTINGS) -> dict[str, dict[str, str]]:
    """class name -> field name -> its comment: the one on the field's first or last line, else the
    comment lines directly above it, joined."""
    text = source.read_text()
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(text).readline) if tok.type == tokenize.COMMENT}
    lines = text.splitlines()
    out: dict[str, dict[str, str]] = {}
    for node in ast.parse(text).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = out.setdefault(node.name, {})
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            own = comments.get(item.lineno) or comments.get(item.end_lineno)
            if own is None:  # the block above: comment-only lines, nearest first
                block, line = [], item.lineno - 1
                while line >= 1 and lines[line - 1].strip().startswith("#"):
                    block.insert(0, comments[line])
                    line -= 1
                own = " ".join(block)
            fields[item.target.id] = own
    return out


class Key(NamedTuple):
    """One config key as the reference shows it."""

    key: str
    type: str
    default: Any
    valid: str
    meaning: str


def _value(value: Any) -> str:
    return json.dumps(value) if value is not None else "null"


def config_keys(source: Path = SETTINGS) -> list[Key]:
    """Every key of ``Config`` (sections recursively; ``pruning.params`` entries are in ``PARAMS``)."""
    from ssl_emp.config import CHOICES, INPUT_PATHS, RANGES, Config
    from ssl_emp.models import MODEL_PARAMS

    comments = field_comments(source)
    keys: list[Key] = []

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            key, value = f"{prefix}{f.name}", getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{key}.")
                continue
            meaning = comments.get(type(obj).__name__, {}).get(f.name, "")
            model = MODEL_PARAMS.get(f.name) if prefix == "model." else None
            valid = (model.text if model else RANGES[key].text if key in RANGES
                     else "one of " + ", ".join(CHOICES[key]) if key in CHOICES
                     else "true or false" if str(f.type) == "bool" else "")
            if model and model.help:  # the models' table says which model reads it and how
                meaning = model.help
            if key in INPUT_PATHS:
                meaning += " (in a config file: relative to the file's folder)"
            keys.append(Key(key, str(f.type), value, valid, meaning))

    walk(Config(), "")
    return keys


def missing_descriptions(source: Path = SETTINGS) -> list[str]:
    """The config keys and pruning parameters that have no description."""
    from ssl_emp.pruning import PARAMS

    return ([k.key for k in config_keys(source) if not k.meaning.strip()]
            + [f"pruning.params.{name}" for name, p in PARAMS.items() if not p.help.strip()])


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _section_intro(name: str) -> str:
    from ssl_emp import settings

    cls = next((c for c in vars(settings).values() if isinstance(c, type) and dataclasses.is_dataclass(c)
                and c.__name__ == name), None)
    doc = (cls.__doc__ or "") if cls is not None else ""
    return "" if doc.startswith(f"{name}(") else " ".join(doc.split())  # dataclasses' own doc is its signature


def render_config() -> str:
    from ssl_emp.config import INPUT_PATHS, Config
    from ssl_emp.models import MODELS
    from ssl_emp.pruning import METHOD_PARAMS, PARAM_METHODS, PARAMS, method_spec

    lines = ["# Configuration keys", "",
             "Generated from `ssl_emp/settings.py` (keys, types, defaults, meanings), `ssl_emp.config.RANGES` "
             "and `CHOICES`, the models' table `ssl_emp.models.MODEL_PARAMS` and the pruning methods' "
             "`ssl_emp.pruning.PARAMS`. A config file holds only the keys it changes; `--set key=value` "
             "changes any key (values parsed as YAML).", "",
             f"Paths: {', '.join(f'`{k}`' for k in INPUT_PATHS)} name files a run reads; in a config file a "
             "relative one is relative to the file's folder, so a config works from any folder. `output_dir` "
             "and `data.cache_dir`, which a run writes, and every path given on the command line "
             "(`--data-dir`, `--set`) are relative to the current folder.", ""]
    sections: dict[str, list[Key]] = {}
    for k in config_keys():
        sections.setdefault(k.key.rsplit(".", 1)[0] if "." in k.key else "", []).append(k)
    classes = {"": "Config", **{f"{f.name}": type(getattr(Config(), f.name)).__name__
                                for f in dataclasses.fields(Config) if dataclasses.is_dataclass(getattr(Config(), f.name))}}
    classes["data.redundancy"] = "RedundancyConfig"
    for section, keys in sections.items():
        lines += [f"## {f'`{section}`' if section else 'Top level'}", ""]
        intro = _section_intro(classes.get(section, ""))
        if intro:
            lines += [intro, ""]
        if section == "model":
            readers = "; ".join(f"`{name}`: {', '.join(cls.config_keys) or 'the backbone keys only'}"
                                for name, cls in MODELS.items())
            lines += [f"Every model reads `backbone` and `backbone_kwargs`; besides, {readers}.", ""]
        lines += ["| key | type | default | valid values | meaning |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| `{k.key}` | `{_cell(k.type)}` | `{_cell(_value(k.default))}` | {_cell(k.valid)} | {_cell(k.meaning)} |"
                  for k in keys]
        lines.append("")
        if section == "pruning":
            lines += ["### Pruning methods", "", "| `pruning.method` | parameters | description |",
                      "| --- | --- | --- |"]
            lines += [f"| `{m}` | {', '.join(f'`{p}`' for p in params)} | {_cell(method_spec(m).description)} |"
                      for m, params in METHOD_PARAMS.items()]
            lines += ["", "### `pruning.params`", "", "| parameter | default | valid values | methods | meaning |",
                      "| --- | --- | --- | --- | --- |"]
            lines += [f"| `{name}` | `{p.default}` | {_cell(p.text)} | {', '.join(PARAM_METHODS[name])} | {_cell(p.help)} |"
                      for name, p in PARAMS.items()]
            lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line
def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._SubParsersAction | argparse._HelpAction)]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def undocumented_options(parser: argparse.ArgumentParser) -> list[str]:
    """``command option`` for every option (and positional) of every subcommand that has no help."""
    return [f"{name} {'/'.join(a.option_strings) or a.dest}" for name, sub in _subcommands(parser).items()
            for a in _options(sub) if a.help != argparse.SUPPRESS and not (a.help or "").strip()]


def render_cli() -> str:
    from ssl_emp.cli import build_parser

    parser = build_parser()
    lines = ["# Command line", "", "Generated from `ssl_emp.cli.build_parser()`; `ssl-emp COMMAND --help` "
             "prints the same.", "", "```text", parser.format_usage().strip(), "```", ""]
    for name, sub in _subcommands(parser).items():
        lines += [f"## `ssl-emp {name}`", "", sub.description or "", "", "```text", sub.format_usage().strip(), "```",
                  "", "| option | values | default | meaning |", "| --- | --- | --- | --- |"]
        for a in _options(sub):
            flags = ", ".join(f"`{s}`" for s in a.option_strings) or f"`{a.dest}`"
            values = ", ".join(map(str, a.choices)) if a.choices else (a.metavar or "") if a.nargs != 0 else "(flag)"
            default = "" if a.default in (None, False, [], argparse.SUPPRESS) else f"`{a.default}`"
            required = " (required)" if a.required else ""
            lines.append(f"| {flags}{required} | {_cell(values)} | {default} | {_cell(a.help)} |")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the hook
def on_files(files, config):
    from mkdocs.exceptions import PluginError
    from mkdocs.structure.files import File

    from ssl_emp.cli import build_parser

    problems = ([f"config key {k}" for k in missing_descriptions()]
                + [f"option {o}" for o in undocumented_options(build_parser())])
    if problems:
        raise PluginError(f"reference: no description for {', '.join(problems)}")
    for uri, render in PAGES.items():
        files.append(File.generated(config, uri, content=globals()[render]()))
    return files
