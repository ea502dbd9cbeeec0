"""Atomic file writes, the one way this package replaces a file.

Every writer puts its bytes in a temp file in the destination's folder (``.NAME.ssl-emp-tmp<PID>``),
fsyncs it and ``os.replace``s it over the destination, so a reader (or a crash) never sees half a
file. The temp file is removed on any failure, Ctrl-C included; one left by a killed process is
removed by ``sweep_temp_files`` at the next start. A full disk or any other ``OSError`` becomes a
one-line ``RunFailed`` naming the path.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ssl_emp.errors import RunFailed

# The sweep deletes what matches, in folders that may also hold a user's files (an output folder,
# the cache), so the name is one no person or other tool picks. The ".NAME.tmp<N>" files of
# earlier versions are no longer swept: they cannot be told from a user's ".notes.tmp1".
_TEMP = re.compile(r"^\..+\.ssl-emp-tmp(\d+)$")


def temp_path(path: Path) -> Path:
    """The temp file ``_atomic`` writes before renaming it to ``path`` (``.NAME.ssl-emp-tmp<PID>``)."""
    return path.with_name(f".{path.name}.ssl-emp-tmp{os.getpid()}")


def os_error_message(exc: OSError, path: str | Path, action: str = "write") -> str:
    """``cannot write PATH: No space left on device`` (one line, no errno noise)."""
    reason = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return f"cannot {action} {path}: {reason}"


def _atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise RunFailed(os_error_message(exc, path)) from exc
    finally:  # also on Ctrl-C: never leave the temp file behind
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    _atomic(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode())


class _Recording:
    """File wrapper that keeps the ``OSError`` of a failed write: torch.save turns it into a
    RuntimeError ("unexpected pos ...") that no longer says the disk is full."""

    def __init__(self, handle: IO[bytes]):
        self.handle, self.error = handle, None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    def write(handle: IO[bytes]) -> None:
        recording = _Recording(handle)
        try:
            torch.save(obj, recording)
        except RuntimeError as exc:
            if recording.error is not None:
                raise recording.error from exc
            raise RunFailed(f"cannot write {path}: {str(exc).splitlines()[0]}") from exc

    _atomic(path, write)


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    """Copy ``src`` over ``dst`` atomically (``dst`` is either the old or the complete new file)."""
    def copy(handle: IO[bytes]) -> None:
        with open(src, "rb") as source:
            shutil.copyfileobj(source, handle)

    _atomic(dst, copy)


def append_line(path: str | Path, line: str) -> None:
    """Append one line to a log file; a full disk is a one-line ``RunFailed``."""
    try:
        with open(path, "a") as handle:
            handle.write(line + "\n")
    except OSError as exc:
        raise RunFailed(os_error_message(exc, path)) from exc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep_temp_files(folder: str | Path, only_dead: bool = False) -> list[Path]:
    """Remove temp files of interrupted writes in ``folder`` (not recursive); returns them.

    ``only_dead``: keep the temp files of live processes (a folder shared without a lock, such as
    the decoded-image cache); otherwise the caller holds the folder's lock and all are stale.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        match = _TEMP.match(entry.name)
        if not match or not entry.is_file():
            continue
        if only_dead and _alive(int(match.group(1))):
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except OSError:  # already gone, or not ours to remove: harmless
            pass
    return removed
