"""Reading the files packed in a Qt resource archive (`.rcc`), as GCompris ships its pictures.

Debian's `gcompris-qt-data` keeps each activity's pictures (many of them real
photographs) in `/usr/share/gcompris-qt/rcc/<activity>.rcc`. The format is
Qt's binary resource file (`rcc --binary`, versions 1 to 3), documented by its
writer, qtbase `src/tools/rcc/rcc.cpp`:

- a header: `qres`, then four big-endian uint32: version, tree offset, data
  offset, names offset (version 3 adds a uint32 of flags);
- the tree: nodes of 14 bytes (22 from version 2: a uint64 modification time
  follows), each `name offset (u32), flags (u16)`, then for a directory
  `child count (u32), first child index (u32)`, else `territory (u16),
  language (u16), data offset (u32)`; node 0 is the root;
- names: `length (u16), hash (u32), UTF-16BE characters`;
- data: `size (u32), bytes`; flag 1 means zlib (`qCompress`: a uint32 of the
  uncompressed size, then a zlib stream), flag 4 zstd, flag 2 a directory.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

_COMPRESSED = 0x1
_DIRECTORY = 0x2
_COMPRESSED_ZSTD = 0x4


class ResourceFormatError(ValueError):
    """The file is not a Qt resource archive this reader understands."""


def read_rcc(path: Path) -> dict[str, bytes]:
    """Every file in the archive at `path`: {"/path/inside/name.ext": bytes}.

    Raises ResourceFormatError for a file that is not an rcc archive, is
    truncated, or holds zstd-compressed entries (not used by GCompris).
    """
    blob = path.read_bytes()
    if blob[:4] != b"qres" or len(blob) < 20:
        raise ResourceFormatError(f"{path} is not a Qt resource archive")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    if version not in (1, 2, 3):
        raise ResourceFormatError(f"{path}: unsupported rcc version {version}")
    node_size = 14 if version == 1 else 22
    files: dict[str, bytes] = {}
    try:
        _walk(blob, (tree, data, names, node_size), 0, "", files, depth=0)
    except (struct.error, zlib.error, IndexError) as exc:
        raise ResourceFormatError(f"{path} is truncated or corrupt: {exc}") from None
    return files


def _name(blob: bytes, names: int, offset: int) -> str:
    (length,) = struct.unpack_from(">H", blob, names + offset)
    start = names + offset + 6
    return blob[start : start + 2 * length].decode("utf-16-be")


def _walk(
    blob: bytes,
    layout: tuple[int, int, int, int],
    index: int,
    prefix: str,
    files: dict[str, bytes],
    depth: int,
) -> None:
    tree, data, names, node_size = layout
    if depth > 64:
        raise ResourceFormatError("rcc tree deeper than 64 levels")
    offset = tree + index * node_size
    name_offset, flags = struct.unpack_from(">IH", blob, offset)
    name = _name(blob, names, name_offset) if index else ""
    path = f"{prefix}/{name}" if index else ""
    if flags & _DIRECTORY:
        count, first = struct.unpack_from(">II", blob, offset + 6)
        for child in range(first, first + count):
            _walk(blob, layout, child, path, files, depth + 1)
        return
    (data_offset,) = struct.unpack_from(">I", blob, offset + 10)
    (size,) = struct.unpack_from(">I", blob, data + data_offset)
    raw = blob[data + data_offset + 4 : data + data_offset + 4 + size]
    if len(raw) != size:
        raise ResourceFormatError(f"entry {path} is cut short")
    if flags & _COMPRESSED_ZSTD:
        raise ResourceFormatError(f"entry {path} is zstd-compressed: not supported")
    if flags & _COMPRESSED:
        raw = zlib.decompress(raw[4:])
    files[path] = raw
