"""Compression dictionary files: a trained zstd dictionary stored in the log, content-addressed.

A segment compressed with a dictionary names it by the dictionary id in its version 2 header
(bytes 116..120); the dictionary itself is a file of the log directory named by the BLAKE3
digest of its content, ``{digest hex}.zdict``, written once and never changed (a new
dictionary is a new file). Pure: ``storage.dictionaries`` reads and writes the files.

Layout (little-endian; ``docs/FORMAT.md``, "Compression dictionary file")::

    0   8  magic        b"SWDICT01"
    8   1  codec id     1 = zstd (the only codec with dictionaries)
    9   3  reserved     zeros
    12  4  size         bytes of content, 8..MAX_CONTENT
    16 32  digest       BLAKE3-256 of the content; its first 4 bytes (u32 LE) are the id
    48  n  content      a zstd dictionary (RFC 8878 section 5, magic 0xEC30A437)
    end 4  CRC-32C      of every byte before it

The id is short (it has to fit the header); the digest is what the file is checked against,
so two stored dictionaries whose ids collide are refused when the second is added, and a
reader that finds two files with one id refuses to pick one.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Final

import blake3

from segwal.errors import CorruptionError, UnsupportedFormatError
from segwal.format.features import COMPRESSION_ZSTD
from segwal.format.layout import crc32c

MAGIC: Final = b"SWDICT01"
HEAD = struct.Struct("<8sB3sI32s")
CRC = struct.Struct("<I")
ZSTD_DICT_MAGIC: Final = b"\x37\xa4\x30\xec"  # 0xEC30A437, little-endian
MIN_CONTENT: Final = 8
MAX_CONTENT: Final = 1 << 20  # zstd's trainer makes 16-112 KiB; bounds what a read allocates
MAX_FILE: Final = HEAD.size + MAX_CONTENT + CRC.size
SUFFIX: Final = ".zdict"
_NAME = re.compile(r"([0-9a-f]{64})\.zdict", re.ASCII)
_NEWER = re.compile(rb"SWDICT\d\d")


@dataclass(frozen=True, slots=True)
class Dictionary:
    """One compression dictionary: its content and the digest that names it."""

    codec_id: int
    content: bytes
    digest: bytes

    @property
    def dict_id(self) -> int:
        return id_of(self.digest)

    @property
    def name(self) -> str:
        return file_name(self.digest)


def digest_of(content: bytes) -> bytes:
    return blake3.blake3(content).digest()


def id_of(digest: bytes) -> int:
    """The header's dictionary id: the digest's first four bytes as a u32 (little-endian)."""
    value: int = struct.unpack_from("<I", digest)[0]
    return value


def file_name(digest: bytes) -> str:
    return digest.hex() + SUFFIX


def id_prefix(dict_id: int) -> str:
    """The first 8 hex digits of the file name of every dictionary with this id."""
    return struct.pack("<I", dict_id).hex()


def parse_name(name: str) -> bytes | None:
    """The digest a dictionary file name carries, or None when it is not one."""
    m = _NAME.fullmatch(name)
    return bytes.fromhex(m.group(1)) if m else None


def make(content: bytes | bytearray | memoryview) -> Dictionary:
    """A dictionary of this content; ValueError when it is not one segwal can store."""
    data = bytes(content)
    if not MIN_CONTENT <= len(data) <= MAX_CONTENT:
        raise ValueError(f"a dictionary is {MIN_CONTENT}..{MAX_CONTENT} bytes, not {len(data)}")
    if data[:4] != ZSTD_DICT_MAGIC:
        raise ValueError("not a trained zstd dictionary (no magic 0xEC30A437)")
    digest = digest_of(data)
    if id_of(digest) == 0:
        # Id 0 means "no dictionary" in a header: one in 2^32 dictionaries; train again.
        raise ValueError("this dictionary's id would be 0; train another one")
    return Dictionary(COMPRESSION_ZSTD, data, digest)


def encode(dictionary: Dictionary) -> bytes:
    head = HEAD.pack(
        MAGIC, dictionary.codec_id, bytes(3), len(dictionary.content), dictionary.digest
    )
    body = head + dictionary.content
    return body + CRC.pack(crc32c(body))


def decode(data: bytes, path: str) -> Dictionary:
    """The dictionary file ``data`` (read from ``path``); CorruptionError for damage (its
    name, size, checksum or digest disagree), UnsupportedFormatError for a newer one."""

    def bad(reason: str, offset: int = 0) -> CorruptionError:
        return CorruptionError(f"dictionary file: {reason}", path=path, offset=offset)

    magic = data[:8]
    if magic != MAGIC and _NEWER.fullmatch(magic):
        raise UnsupportedFormatError(
            f"dictionary file version {magic[6:8].decode()} needs a newer segwal", path=path
        )
    if len(data) < HEAD.size + MIN_CONTENT + CRC.size:
        raise bad(f"{len(data)} bytes is too short")
    magic, codec_id, reserved, size, digest = HEAD.unpack_from(data)
    if magic != MAGIC:
        raise bad("bad magic")
    if HEAD.size + size + CRC.size != len(data) or not MIN_CONTENT <= size <= MAX_CONTENT:
        raise bad(f"size {size} disagrees with the file size {len(data)}", 12)
    (crc,) = CRC.unpack_from(data, len(data) - CRC.size)
    if crc32c(data[: -CRC.size]) != crc:
        raise bad("checksum mismatch", len(data) - CRC.size)
    if codec_id != COMPRESSION_ZSTD:
        raise UnsupportedFormatError(
            f"dictionary file: codec id {codec_id} is unknown to this segwal", path=path
        )
    if reserved != bytes(3):
        raise bad("reserved bytes are not zero", 9)
    content = bytes(data[HEAD.size : HEAD.size + size])
    if digest_of(content) != digest:
        raise bad("content does not match its digest", HEAD.size)
    named = parse_name(path.rsplit("/", 1)[-1])
    if named is not None and named != digest:
        raise bad(f"file name disagrees with its digest {digest.hex()}", 16)
    if id_of(digest) == 0:
        raise bad("dictionary id 0", 16)
    return Dictionary(codec_id, content, digest)
