"""The data folder of a local stack: checked up front and locked while in use.

One `imgsearch up` (or demo) per folder: Milvus, Redis and the logs of two
stacks on one folder would corrupt each other (Milvus waits forever on its
locked database file). `DataDirLock.acquire` takes an exclusive `flock` on
`DATA_DIR/imgsearch.lock`, held until `release()` or the process ends: the
kernel drops it on any exit, SIGKILL included, so a crash never leaves a
stale lock behind. The file holds the owner's pid, for the message the second
one prints. The descriptor is not inherited by child processes (Python opens
files close-on-exec), so the services never hold the lock themselves.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

LOCK_NAME = "imgsearch.lock"


class DataDirError(Exception):
    """The data folder cannot be used: not creatable, not writable, or in use (a usage error)."""


def prepare_data_dir(path: Path) -> Path:
    """Create `path` if needed and check it is a writable folder; returns it resolved.

    Raises DataDirError, one line naming the path and the reason.
    """
    shown = str(path)
    if path.exists() and not path.is_dir():
        raise DataDirError(f"data folder {shown} is not a folder (a file is in the way)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataDirError(
            f"cannot create data folder {shown}: {error.strerror or error}"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise DataDirError(f"data folder {shown} is not writable")
    return path.resolve()


class DataDirLock:
    """An exclusive lock on a data folder, for the life of a stack (see the module doc)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Check the folder (`prepare_data_dir`) and lock it; DataDirError if in use."""
        folder = prepare_data_dir(data_dir)
        lock_path = folder / LOCK_NAME
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise DataDirError(
                f"cannot use data folder {data_dir}: {lock_path}: {error.strerror or error}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            owner = _read_pid(fd)
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f" (pid {owner})" if owner else ""
                raise DataDirError(
                    f"{data_dir} is in use by another imgsearch up{who}; stop it, or give"
                    " another --data-dir"
                ) from None
            raise DataDirError(f"cannot lock {lock_path}: {error.strerror or error}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(lock_path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Unlock (the file stays: removing it would race with a new owner)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
