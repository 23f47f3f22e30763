"""How file names become item uris, ids and labels: one stated, reversible encoding.

A POSIX file name is a sequence of bytes, not text: it may be Latin-1 from an
old archive (`caf\\xe9.png`), hold a newline or a tab, or any byte but "/" and
NUL. Item ids, uris and labels are UTF-8 strings without control characters
(see `Item` in search.proto), so names are encoded on the way in:

- **uri** (`file_uri`): an RFC 8089 `file:` URI of the absolute path, the
  path's raw bytes percent-encoded as RFC 3986 says: every byte except the
  unreserved characters (`A-Z a-z 0-9 - . _ ~`) and "/" becomes `%XX`. The
  uri is plain ASCII: `/photos/caf\\xe9 1.png` -> `file:///photos/caf%E9%201.png`,
  `/photos/café.png` (UTF-8) -> `file:///photos/caf%C3%A9.png`.
- **ids and labels** (`escape_name`: `--id-from path`, `--folder-label`) and
  names in messages: the name as text, with `%`, control characters (C0, DEL,
  C1, Unicode line/paragraph separators and bidirectional controls) and every
  byte that is not part of valid UTF-8 percent-encoded as `%XX` of their
  bytes. Other names are unchanged: `photos/café.png` stays as it is,
  `caf\\xe9.png` becomes `caf%E9.png`, `a\\nb.png` becomes `a%0Ab.png`,
  `100%.png` becomes `100%25.png`.

Both decode the same way, back to the exact bytes of the name:
`urllib.parse.unquote_to_bytes` (`name_bytes`), or `path_from_uri` for a uri.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit

# Limits of the Search service on what it stores (search.proto, Item).
MAX_ID_BYTES = 512
MAX_URI_BYTES = 2048
MAX_LABEL_VALUE_BYTES = 256

FILE_SCHEME = "file://"

# Characters escape_name percent-encodes: "%" itself (so decoding is
# unambiguous), C0 controls, DEL and C1 controls, line and paragraph
# separators, bidirectional controls (they reorder what a terminal shows), and
# the lone surrogates U+DC80..U+DCFF that stand for undecodable bytes.
_ESCAPED = re.compile(
    "[%\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\udc80-\udcff]"
)


def raw_name(name: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> bytes:
    """The bytes of a file name as the operating system stores them."""
    return os.fsencode(name)


def _percent(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as surrogateescape keeps it
        return f"%{code - 0xDC00:02X}"
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))


def escape_name(name: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """A file name (or path) as printable UTF-8 text, reversibly (see the module docstring).

    `name_bytes(escape_name(x)) == os.fsencode(x)` for every name.
    """
    text = raw_name(name).decode("utf-8", "surrogateescape")
    return _ESCAPED.sub(_percent, text)


def name_bytes(escaped: str) -> bytes:
    """The original bytes of a name encoded by `escape_name` (or of a uri's path)."""
    return unquote_to_bytes(escaped)


def file_uri(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """The RFC 8089 `file:` URI of `path` made absolute (symbolic links are not resolved)."""
    absolute = os.path.abspath(raw_name(path))
    return FILE_SCHEME + quote_from_bytes(absolute, safe="/")


def path_from_uri(uri: str) -> Path:
    """The local path a `file:` URI names (its bytes decoded as the OS does); a plain path as is.

    Raises ValueError for another scheme or a remote host.
    """
    if not uri.startswith("file:"):
        if "://" in uri:
            raise ValueError(f"not a file: URI: {uri[:80]!r}")
        return Path(uri)
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"file: URI of another host: {parts.netloc!r}")
    return Path(os.fsdecode(unquote_to_bytes(parts.path)))


def utf8_len(text: str) -> int:
    """Bytes of `text` in UTF-8 (how the Search service measures its limits)."""
    return len(text.encode("utf-8"))
