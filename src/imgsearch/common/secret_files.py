"""Secrets and credentials read from files, re-read when the files change.

Kubernetes mounts a Secret as files and swaps them atomically (a symlink flip)
when the Secret changes; cert-manager renews certificates the same way. So
every secret the services use is a file, never an environment variable or an
argument, and the readers here notice a new version without a restart:

- `FileWatch`: has the file (followed through symlinks) changed since the
  last look? Compares inode, size and modification time, at most every
  `interval_s` seconds, so callers on a hot path pay one `stat` per interval.
- `read_secret`: the text of a secret file, stripped of surrounding
  whitespace, or a `SecretFileError` that names the file and the problem,
  never the content.
- `SecretFile`: the current value of a secret file, re-read when it changes
  (keeping the last good value if the new one cannot be read).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from imgsearch.common.settings import ConfigurationError

_log = logging.getLogger(__name__)


class SecretFileError(ConfigurationError):
    """A secret or credential file is missing, unreadable, empty or malformed.

    The message names the file and the problem, never the file's content.
    """


def read_bytes(path: Path, what: str) -> bytes:
    """The bytes of `path`; SecretFileError (naming `what` and the path) if unreadable or empty."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise SecretFileError(f"cannot read {what} {path}: {error.strerror or error}") from None
    if not data.strip():
        raise SecretFileError(f"{what} {path} is empty")
    return data


def read_secret(path: Path, what: str) -> str:
    """The text of a one-value secret file (a token, a password), without surrounding whitespace."""
    data = read_bytes(path, what)
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretFileError(f"{what} {path} is not UTF-8 text") from None
    if "\n" in text or "\r" in text:
        raise SecretFileError(f"{what} {path} must hold one line (the secret alone)")
    return text


def _signature(paths: tuple[Path, ...]) -> tuple[tuple[int, int, int], ...] | None:
    try:
        stats = [os.stat(path) for path in paths]
    except OSError:
        return None
    return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


class FileWatch:
    """Tells whether a set of files changed since the last call that said so.

    `changed()` is cheap: it looks at the files at most every `interval_s`
    seconds. A file that cannot be stat'ed counts as unchanged (the caller
    keeps what it has); it is looked at again on the next interval.
    """

    def __init__(self, *paths: Path, interval_s: float = 1.0) -> None:
        self.paths = tuple(Path(p) for p in paths)
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._seen = _signature(self.paths)
        self._next_look = time.monotonic() + interval_s

    def changed(self) -> bool:
        now = time.monotonic()
        if now < self._next_look:
            return False
        with self._lock:
            self._next_look = now + self._interval_s
            signature = _signature(self.paths)
            if signature is None or signature == self._seen:
                return False
            self._seen = signature
            return True


class SecretFile:
    """The current value of a one-line secret file; re-read when the file changes."""

    def __init__(self, path: Path, what: str, interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self.what = what
        self._watch = FileWatch(self.path, interval_s=interval_s)
        self._value = read_secret(self.path, what)

    def get(self) -> str:
        if self._watch.changed():
            try:
                self._value = read_secret(self.path, self.what)
                _log.info("reloaded %s", self.what, extra={"path": str(self.path)})
            except SecretFileError as error:
                _log.error("keeping the previous %s: %s", self.what, error)
        return self._value
