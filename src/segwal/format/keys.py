"""The ``KEYS`` file's bytes: an encrypted log's log keys, each wrapped under the
key-encryption key, which of them new segments use, and the log they belong to. Pure:
``storage.keys`` reads and replaces it.

Layout (little-endian; ``docs/FORMAT.md``, "KEYS file")::

    0   8  magic        b"SWKEYS01"
    8  16  log id       the log's, as in every segment header
    24  4  current      key id new segments use
    28  4  count        entries that follow, 1..MAX_KEYS
    32 76  entry        x count, key ids strictly increasing:
                          0  4  key id      1..2^32-1, named by the segments it encrypted
                          4  1  cipher id   1 AES-256-GCM, 2 ChaCha20-Poly1305
                          5  3  reserved    zeros
                          8  8  created_us  when the log key was made
                         16 12  nonce       of the wrap
                         28 48  wrapped     AES-256-GCM(KEK, nonce, log key, ad=log id + key id)
    end 4  CRC-32C      of every byte before it

The CRC tells damage from a wrong key: a file whose CRC holds but whose wrapped key does not
open under the given KEK was opened with the wrong KEK (``WrongKeyError``), never "damage".
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from segwal.errors import CorruptionError, UnsupportedFormatError, WrongKeyError
from segwal.format.cipher import CIPHERS
from segwal.format.keyring import (
    KEY_BYTES,
    MAX_KEY_ID,
    NONCE_BYTES,
    KeyRing,
    LogKey,
    NoncePolicy,
    RandomBytes,
    cipher_name,
    fresh_nonces,
    unwrap_log_key,
    wrap_log_key,
)
from segwal.format.layout import crc32c

MAGIC: Final = b"SWKEYS01"
HEAD = struct.Struct("<8s16sII")
ENTRY = struct.Struct("<IB3sQ12s48s")
CRC = struct.Struct("<I")
MAX_KEYS: Final = 4096  # a key per rotation; bounds the file to ~311 KiB
MAX_SIZE: Final = HEAD.size + MAX_KEYS * ENTRY.size + CRC.size
_NEWER = re.compile(rb"SWKEYS\d\d")


@dataclass(frozen=True, slots=True, kw_only=True)
class WrappedKey:
    """One log key as stored: sealed under the KEK."""

    key_id: int
    cipher_id: int
    created_us: int
    nonce: bytes
    wrapped: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class KeysFile:
    """What ``KEYS`` holds."""

    log_id: bytes
    current: int
    entries: tuple[WrappedKey, ...]

    @property
    def cipher_id(self) -> int:
        """The cipher new segments use: the current key's."""
        return next(e.cipher_id for e in self.entries if e.key_id == self.current)


def encode(keys: KeysFile) -> bytes:
    parts = [HEAD.pack(MAGIC, keys.log_id, keys.current, len(keys.entries))]
    for e in keys.entries:
        parts.append(ENTRY.pack(e.key_id, e.cipher_id, bytes(3), e.created_us, e.nonce, e.wrapped))
    body = b"".join(parts)
    return body + CRC.pack(crc32c(body))


def decode(data: bytes, path: str) -> KeysFile:
    """The KEYS file ``data`` (read from ``path``); CorruptionError for damage, and
    UnsupportedFormatError for a newer version or a cipher this segwal does not know."""

    def bad(reason: str, offset: int = 0) -> CorruptionError:
        return CorruptionError(f"KEYS file: {reason}", path=path, offset=offset)

    if len(data) < HEAD.size + ENTRY.size + CRC.size:
        if data[:8] != MAGIC and _NEWER.fullmatch(data[:8]):
            raise UnsupportedFormatError(f"KEYS file version {data[6:8]!r} is newer", path=path)
        raise bad(f"{len(data)} bytes is too short")
    magic, log_id, current, count = HEAD.unpack_from(data)
    if magic != MAGIC:
        if _NEWER.fullmatch(magic):
            raise UnsupportedFormatError(
                f"KEYS file version {magic[6:8].decode()} needs a newer segwal", path=path
            )
        raise bad("bad magic")
    expected = HEAD.size + count * ENTRY.size + CRC.size
    if not 1 <= count <= MAX_KEYS or expected != len(data):
        raise bad(f"{count} keys disagree with the file size {len(data)}", 28)
    (crc,) = CRC.unpack_from(data, len(data) - CRC.size)
    if crc32c(data[: -CRC.size]) != crc:
        raise bad("checksum mismatch", len(data) - CRC.size)
    entries = []
    previous = 0
    for i in range(count):
        offset = HEAD.size + i * ENTRY.size
        key_id, cipher_id, reserved, created_us, nonce, wrapped = ENTRY.unpack_from(data, offset)
        # A checksum says the bytes are the ones written, not that a writer of this format
        # wrote them: every field is range-checked anyway.
        if not previous < key_id <= MAX_KEY_ID:
            raise bad(f"key id {key_id} is not above the previous {previous}", offset)
        if reserved != bytes(3):
            raise bad(f"reserved bytes of key {key_id} are not zero", offset + 5)
        if cipher_id not in CIPHERS:
            raise UnsupportedFormatError(
                f"KEYS file: key {key_id} uses cipher id {cipher_id}, unknown to this segwal",
                path=path,
            )
        previous = key_id
        entries.append(
            WrappedKey(
                key_id=key_id,
                cipher_id=cipher_id,
                created_us=created_us,
                nonce=nonce,
                wrapped=wrapped,
            )
        )
    if current not in {e.key_id for e in entries}:
        raise bad(f"the current key {current} is not among the keys", 24)
    return KeysFile(log_id=log_id, current=current, entries=tuple(entries))


def new_log_key(key_id: int, cipher_id: int, created_us: int, random: RandomBytes) -> LogKey:
    """A fresh random log key."""
    cipher_name(cipher_id)
    if not 1 <= key_id <= MAX_KEY_ID:
        raise ValueError(f"key id {key_id} outside 1..{MAX_KEY_ID}")
    return LogKey(key_id=key_id, cipher_id=cipher_id, key=random(KEY_BYTES), created_us=created_us)


def seal(
    kek: bytes, log_id: bytes, keys: Iterable[LogKey], current: int, random: RandomBytes
) -> KeysFile:
    """Every log key wrapped under ``kek`` (a fresh wrap nonce each), as ``KEYS`` holds them."""
    entries = tuple(
        WrappedKey(
            key_id=k.key_id,
            cipher_id=k.cipher_id,
            created_us=k.created_us,
            nonce=(nonce := random(NONCE_BYTES)),
            wrapped=wrap_log_key(kek, log_id, k.key_id, k.key, nonce),
        )
        for k in sorted(keys, key=lambda k: k.key_id)
    )
    if not 1 <= len(entries) <= MAX_KEYS:
        raise ValueError(f"a key ring holds 1..{MAX_KEYS} keys, not {len(entries)}")
    return KeysFile(log_id=log_id, current=current, entries=entries)


def unseal(kek: bytes, keys: KeysFile, path: str) -> list[LogKey]:
    """Every log key of ``keys`` unwrapped; WrongKeyError when ``kek`` opens none of them.

    All of them or none: one key that does not open under a KEK that opened the others was
    wrapped by something else, and is damage a CRC could not see (CorruptionError)."""
    out: list[LogKey] = []
    for e in keys.entries:
        key = unwrap_log_key(kek, keys.log_id, e.key_id, e.nonce, e.wrapped)
        if key is None or len(key) != KEY_BYTES:
            if out:
                raise CorruptionError(
                    f"KEYS file: log key {e.key_id} does not unwrap under the key that "
                    "unwrapped the others",
                    path=path,
                )
            raise WrongKeyError(path, e.key_id)
        out.append(LogKey(key_id=e.key_id, cipher_id=e.cipher_id, key=key, created_us=e.created_us))
    return out


def open_ring(
    kek: bytes,
    keys: KeysFile,
    path: str,
    *,
    random: RandomBytes = os.urandom,
    nonces: NoncePolicy = fresh_nonces,
) -> KeyRing:
    """The key ring ``keys`` holds, unwrapped under ``kek``."""
    log_keys = unseal(kek, keys, path)
    return KeyRing(keys.log_id, log_keys, keys.current, path=path, random=random, nonces=nonces)
