"""An exclusive lock on a folder, so that one process writes a run or benchmark folder at a time.

``FolderLock`` holds ``fcntl.flock`` on ``DIR/.lock`` for the whole run (non-blocking; the kernel
drops it when the process dies, so a lock file left by a killed run is no obstacle). A forked child
(a DataLoader worker) closes its copy of the lock's descriptor at once: otherwise the flock would
live on in workers that outlive a killed run by seconds and refuse an immediate ``--resume``.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from ssl_emp.errors import ConfigError
from ssl_emp.run.files import os_error_message
from ssl_emp.run.layout import RunLayout

LOCK_NAME = RunLayout.lock_name
# Descriptors of the locks this process holds: closed in every forked child (see the module doc).
_HELD: set[int] = set()


def _drop_inherited_locks() -> None:
    for fd in _HELD:
        try:
            os.close(fd)  # the child's reference only: the parent's flock stays
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


class FolderLock:
    """Exclusive, non-blocking lock on ``folder/.lock``; a held lock is a one-line ``ConfigError``.

    A folder this lock created and that holds nothing but the lock file when released (the run
    failed before writing anything) is removed again.
    """

    def __init__(self, folder: str | Path, what: str = "run"):
        self.folder, self.what = Path(folder), what
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> None:
        try:  # exists() too: a name too long fails there, and is the --output-dir's fault as well
            self._created = not self.folder.exists()
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(os_error_message(exc, self.folder, "create")) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"another ssl-emp process is writing to {self.folder} (it holds "
                              f"{self.folder / LOCK_NAME}); wait for it or choose another --output-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # for a person wondering who holds it
        self._fd = fd
        _HELD.add(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        if self._created and [p.name for p in self.folder.iterdir()] == [LOCK_NAME]:
            (self.folder / LOCK_NAME).unlink(missing_ok=True)
            self.folder.rmdir()
        _HELD.discard(self._fd)
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
