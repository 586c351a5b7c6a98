"""Format version 2: the header flags and frame flags of its optional features.

A version 2 segment is a version 1 segment plus features, each behind one header flag bit
so a reader knows exactly what the segment uses (``docs/FORMAT.md``, "Version 2"):

- ``HEADER_COMPRESSED``: frames MAY carry ``FRAME_COMPRESSED``; the header's compression id
  (byte 13) names the codec.
- ``HEADER_ENCRYPTED``: every records frame carries ``FRAME_ENCRYPTED``; the header's
  encryption id (byte 14) names the cipher, and bytes 96..116 the key id and salt.
- ``HEADER_PREALLOCATED``: the file MAY hold zero bytes after its last frame (space the
  writer allocated up front); the data ends at a frame boundary where every byte from there
  to the end of the file is zero (:func:`zero_tail`).
- Bits 2..3 are set aside for features other work will specify here (a clean-close record,
  an index bound to its segment); a reader that does not know a bit MUST refuse the segment
  as newer, never guess.

A frame with either frame flag is **opaque**: after its 40-byte head come a u32 plain size
(the bytes of its lengths table plus payloads), the 12-byte nonce when encrypted, then the
stored body, and the head's body-bytes field counts every byte after the head. A frame with
neither flag has the version 1 layout, in either version.
"""

from __future__ import annotations

import struct
from typing import Final

VERSION_1: Final = 1
VERSION_2: Final = 2

HEADER_COMPRESSED: Final = 0x0001
HEADER_ENCRYPTED: Final = 0x0002
# Reserved, not known by this reader (a segment with one of them is newer): documented so
# the issues that need them take these bits and no other.
HEADER_CLEAN_CLOSE: Final = 0x0004
HEADER_BOUND_INDEX: Final = 0x0008
# A zeroed tail after the last frame (preallocate=True). Not a frame flag: it changes where
# the data ends, so a reader that does not know it must refuse the segment rather than cut
# the zeros as a torn tail (which a version 1 reader would do).
HEADER_PREALLOCATED: Final = 0x0010
KNOWN_HEADER_FLAGS: Final = HEADER_COMPRESSED | HEADER_ENCRYPTED | HEADER_PREALLOCATED

FRAME_COMMIT: Final = 0x01
FRAME_COMPRESSED: Final = 0x02
FRAME_ENCRYPTED: Final = 0x04
FRAME_OPAQUE: Final = FRAME_COMPRESSED | FRAME_ENCRYPTED

COMPRESSION_ZSTD: Final = 1
COMPRESSION_LZ4: Final = 2
CIPHER_AES_256_GCM: Final = 1
CIPHER_CHACHA20_POLY1305: Final = 2

NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
SALT_SIZE: Final = 16
PLAIN_SIZE = struct.Struct("<I")  # after the head of an opaque frame
# Most an opaque frame adds to the plain frame of the same records (compression only shrinks).
OPAQUE_OVERHEAD: Final = 4 + NONCE_SIZE + TAG_SIZE

# Header bytes 96..124 in version 2: key id, segment salt, dictionary id, reserved.
V2_FIELDS = struct.Struct("<I16sI4s")
V2_FIELDS_OFFSET: Final = 96


def allowed_frame_flags(header_flags: int) -> int:
    """The frame flag bits a segment with these header flags may use."""
    allowed = FRAME_COMMIT
    if header_flags & HEADER_COMPRESSED:
        allowed |= FRAME_COMPRESSED
    if header_flags & HEADER_ENCRYPTED:
        allowed |= FRAME_ENCRYPTED
    return allowed


def frame_length(flags: int, count: int, body_bytes: int) -> int:
    """A frame's length from its head: an opaque frame's body field counts all after the head."""
    if flags & FRAME_OPAQUE:
        return 40 + body_bytes
    return 40 + 4 * count + body_bytes


def opaque_prefix(flags: int) -> int:
    """Bytes between an opaque frame's head and its stored body (plain size, nonce)."""
    return PLAIN_SIZE.size + (NONCE_SIZE if flags & FRAME_ENCRYPTED else 0)


def zero_tail(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` (the bytes from a frame boundary to the end of a preallocated
    segment, or one window of them) is all zero: the end of the segment's data."""
    raw = data if isinstance(data, bytes | bytearray) else bytes(data)
    return raw.count(0) == len(raw)  # C speed; no slice per window
