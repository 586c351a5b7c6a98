"""A consumer cursor file's bytes: the next LSN its consumer reads, and the log's rewind
count when it was committed. Pure: ``log.cursors`` reads and writes the files.

Layout (little-endian)::

    version 1 (20 bytes): magic b"SWCUR001" (8), position u64 (8), CRC32C of bytes 0..16 (4)
    version 2 (28 bytes): magic b"SWCUR002" (8), position u64 (8), rewinds u64 (8),
                          CRC32C of bytes 0..24 (4)

Version 2 is written when the log has been rewound at least once (so the cursor can tell
that its position may point at replaced records); version 1 otherwise, as before.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from segwal.errors import CorruptionError
from segwal.format.layout import MAX_LSN, crc32c

V1 = struct.Struct("<8sQ")
V2 = struct.Struct("<8sQQ")
CRC = struct.Struct("<I")
MAGIC_V1: Final = b"SWCUR001"
MAGIC_V2: Final = b"SWCUR002"
MAX_SIZE: Final = V2.size + CRC.size


class CursorFile(NamedTuple):
    position: int  # the next LSN the consumer reads
    rewinds: int | None  # the log's rewind count at the commit; None in a version 1 file


def encode(position: int, rewinds: int = 0) -> bytes:
    raw = V2.pack(MAGIC_V2, position, rewinds) if rewinds else V1.pack(MAGIC_V1, position)
    return raw + CRC.pack(crc32c(raw))


def decode(raw: bytes, path: str) -> CursorFile:
    """The cursor in ``raw``; CorruptionError (with ``path``) when damaged or out of range."""
    layout = V2 if raw[:8] == MAGIC_V2 else V1
    size = layout.size
    if len(raw) != size + CRC.size or crc32c(raw[:size]) != CRC.unpack_from(raw, size)[0]:
        raise CorruptionError("cursor file is damaged", path=path, offset=0)
    if layout is V2:
        _magic, position, rewinds = V2.unpack_from(raw)
        found = CursorFile(int(position), int(rewinds))
    else:
        magic, position = V1.unpack_from(raw)
        if magic != MAGIC_V1:
            raise CorruptionError("not a segwal cursor file", path=path, offset=0)
        found = CursorFile(int(position), None)
    if not 1 <= found.position <= MAX_LSN + 1 or (found.rewinds or 0) > MAX_LSN:
        raise CorruptionError(
            f"cursor file holds position {found.position}, not an LSN", path=path, offset=0
        )
    return found
