"""The one YAML reader of user input: config files, benchmark files, run folders' config.yaml and
``--set`` values. Safe types only, no aliases, a nesting and a size limit, UTF-8 checked; every
failure a one-line ConfigError naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ssl_emp.errors import ConfigError

#: A config file is a few kB; anything far larger is not one, and is refused before it is parsed.
MAX_YAML_BYTES = 1 << 20
#: Nested mappings and lists, at most: PyYAML composes recursively, so deeper is a RecursionError.
MAX_YAML_DEPTH = 64


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases and with a nesting limit. A few hundred bytes of nested
    aliases (``b: [*a, *a, ...]``) stand for gigabytes once a value is copied, saved or printed in an
    error message; no config needs them."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not allowed in ssl-emp YAML: write the value out",
                event.start_mark)
        if self.depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nests more than {MAX_YAML_DEPTH} levels deep",
                                              event.start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def parse_yaml(text: str, source: str) -> Any:
    """``text`` as YAML (safe types only, no aliases); a one-line ConfigError naming ``source`` otherwise.
    The one YAML parser of user input: config files, benchmark files, run folders' config.yaml, ``--set``."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        where = f" (line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1})" if exc.problem_mark else ""
        problem = exc.problem or str(exc).splitlines()[0]
        raise ConfigError(f"{source} is not valid YAML: {problem}{where}") from exc
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: an integer of over 4300 digits
        raise ConfigError(f"{source} is not valid YAML: {str(exc).splitlines()[0]}") from exc


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """The YAML document in file ``path`` (``parse_yaml``), at most ``MAX_YAML_BYTES`` of UTF-8 text;
    one-line ConfigErrors naming ``what`` and the path for a missing, unreadable or oversized file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder, not a file (pass a .yaml file)")
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}") from exc
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(f"{what} {path} is larger than {MAX_YAML_BYTES >> 10} KiB: not a config file")
    try:
        text = data.decode("utf-8")  # (PyYAML skips a byte-order mark, as some Windows editors write)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                          "save it as UTF-8") from exc
    return parse_yaml(text, f"{what} {path}")
