"""The contract between the frame codec and the key ring (a development copy of the one in
``format/cipher.py`` on the codecs branch; replaced by it when the branches meet).

The frame codec encrypts and decrypts with a ``SegmentKey``; the key ring (``format.keyring``)
hands out one per segment, derived from a log key, with a nonce source of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class FrameAead(Protocol):
    """An AEAD cipher object: cryptography's ``AESGCM`` and ``ChaCha20Poly1305`` satisfy it."""

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...


@dataclass(frozen=True, slots=True)
class SegmentKey:
    """What one segment is encrypted with: cipher, key id and salt (all in its header), the
    AEAD object, and a source of 12-byte nonces that never repeat for this key."""

    cipher_id: int
    key_id: int
    salt: bytes  # 16 bytes, stored in the header
    aead: FrameAead
    next_nonce: Callable[[], bytes]


class SegmentKeys(Protocol):
    """The key ring: a key for each new segment, and the key of an existing one."""

    cipher_id: int

    def for_new_segment(self, log_id: bytes, sequence: int, first_lsn: int) -> SegmentKey: ...

    def for_segment(
        self,
        log_id: bytes,
        sequence: int,
        first_lsn: int,
        key_id: int,
        salt: bytes,
        *,
        writing: bool,
    ) -> SegmentKey: ...
