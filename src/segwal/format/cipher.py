"""Frame encryption of format version 2: the contract between the bytes and the keys.

This module owns what an encrypted frame looks like and how it is sealed and opened; the
key ring (``segwal.crypto``, another module) owns where keys come from. The ring implements
``SegmentKeys``: it hands the writer a ``SegmentKey`` for each new segment (a fresh salt,
a derived key, a nonce source) and any reader the key of an existing segment from the key
id and salt its header stores.

An encrypted frame (``FRAME_ENCRYPTED``) is::

    head (40)  | plain size u32 | nonce (12) | AEAD(lengths table + payloads, compressed
                                                   first when that pays) + tag (16)

The associated data is the segment's 128 header bytes followed by the frame's bytes from
offset 4 up to the ciphertext (head without its CRC, plain size, nonce): a flipped type,
timestamp or LSN, a frame moved to another segment or another place fails to authenticate.
The frame CRC covers the stored ciphertext, so recovery, ``verify``, the BLAKE3 chain and
the seal never need a key.

The nonce is stored, never derived from the LSN or the offset: three paths write the same
LSNs again with other bytes (the tail resumed after a recovery cut, ``truncate_after``'s
rewrite, a replaced empty tail), and a derived nonce would repeat under the same key.
``for_segment(..., writing=True)`` therefore gives a nonce source with a freshly drawn
prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from segwal.format.features import (
    CIPHER_AES_256_GCM,
    CIPHER_CHACHA20_POLY1305,
    NONCE_SIZE,
    SALT_SIZE,
    TAG_SIZE,
)
from segwal.format.layout import FormatError

__all__ = [
    "CIPHERS",
    "CIPHER_AES_256_GCM",
    "CIPHER_CHACHA20_POLY1305",
    "KEY_SIZE",
    "NONCE_SIZE",
    "SALT_SIZE",
    "TAG_SIZE",
    "AuthenticationFailed",
    "FrameAead",
    "SegmentKey",
    "SegmentKeys",
    "open_body",
    "seal_into",
]

CIPHERS: Final = {CIPHER_AES_256_GCM: "aes-256-gcm", CIPHER_CHACHA20_POLY1305: "chacha20-poly1305"}
KEY_SIZE: Final = 32  # both ciphers take 256-bit keys


class FrameAead(Protocol):
    """An AEAD with a 12-byte nonce and a 16-byte tag appended to the ciphertext.

    ``cryptography``'s ``AESGCM`` and ``ChaCha20Poly1305`` objects satisfy it; ``decrypt``
    raises (any exception) when the tag does not authenticate.
    """

    def encrypt(
        self, nonce: bytes, data: bytes | bytearray, associated_data: bytes | None
    ) -> bytes: ...

    def decrypt(
        self, nonce: bytes, data: bytes | memoryview, associated_data: bytes | None
    ) -> bytes: ...


@dataclass(frozen=True, slots=True)
class SegmentKey:
    """The key of one segment, as the writer or a reader of that segment uses it."""

    cipher_id: int
    key_id: int  # stored at header offset 96
    salt: bytes  # 16 bytes, stored at header offset 100
    aead: FrameAead
    next_nonce: Callable[[], bytes]  # 12 fresh bytes per call, never repeating for this key

    def __post_init__(self) -> None:
        if self.cipher_id not in CIPHERS:
            raise ValueError(f"unknown cipher id {self.cipher_id}")
        if len(self.salt) != SALT_SIZE or not 0 <= self.key_id <= 0xFFFFFFFF:
            raise ValueError("a segment key has a u32 key id and a 16-byte salt")


class SegmentKeys(Protocol):
    """The key ring as the format sees it (implemented by ``segwal.crypto``)."""

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


class AuthenticationFailed(FormatError):
    """A frame whose checksum is valid did not authenticate: tampering or the wrong key,
    never a torn write (a torn write fails the CRC first)."""


def seal_into(
    key: SegmentKey, header: bytes, frame: bytearray, at: int, plain: bytes | bytearray
) -> None:
    """Seal one frame body in place: a fresh nonce is stored at ``frame[at:]`` and the
    ciphertext and tag fill the rest of ``frame`` (sized for them by the caller).

    The associated data is ``header`` followed by ``frame[4:at]`` (the head without its
    CRC, the plain size) and the nonce; an AEAD with ``encrypt_into`` (cryptography 45 and
    later) writes the ciphertext into the frame without a copy.
    """
    nonce = _nonce(key)
    end = at + NONCE_SIZE
    frame[at:end] = nonce
    associated = header + frame[4:end]
    into = getattr(key.aead, "encrypt_into", None)
    if into is not None:
        into(nonce, plain, associated, memoryview(frame)[end:])
    else:
        frame[end:] = key.aead.encrypt(nonce, plain, associated)


def _nonce(key: SegmentKey) -> bytes:
    nonce = key.next_nonce()
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"a nonce source gave {len(nonce)} bytes, not {NONCE_SIZE}")
    return nonce


def open_body(
    key: SegmentKey,
    nonce: bytes,
    associated: bytes,
    sealed: bytes | memoryview,
    into: memoryview | None = None,
) -> bytes | memoryview:
    """The plain body of one frame; AuthenticationFailed if it does not authenticate.

    ``associated``: the header and the frame's bytes from offset 4 up to the nonce, nonce
    included. ``into`` (exactly the plain size): a buffer the caller reuses, which an AEAD
    with ``decrypt_into`` (cryptography 45 and later) fills without allocating and zeroing
    a new one per frame; the result is then ``into`` itself.
    """
    if len(sealed) < TAG_SIZE:
        raise FormatError(f"encrypted body of {len(sealed)} bytes is shorter than its tag")
    aead = key.aead
    try:
        if into is not None:
            decrypt_into = getattr(aead, "decrypt_into", None)
            if decrypt_into is not None:
                decrypt_into(nonce, sealed, associated, into)
                return into
        return aead.decrypt(nonce, sealed, associated)
    except Exception:  # InvalidTag from cryptography; any AEAD's refusal means the same
        raise AuthenticationFailed(
            "frame does not authenticate (tampered, or another key)"
        ) from None
