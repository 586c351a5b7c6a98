"""A small key ring for the format's tests: real AES-256-GCM from ``cryptography``, keys
derived from one secret and the segment's salt with HKDF, and a counter nonce source.

The real key ring (``segwal.crypto``) wraps log keys under a key-encryption key; this one
implements only the ``SegmentKeys`` contract of ``segwal.format.cipher``, with the same
nonce rule (a random 8-byte prefix drawn per key instance, i.e. per writer, resume or
rewrite, plus a 32-bit counter), and remembers every (key, nonce) pair it handed out.
"""

from __future__ import annotations

import itertools
import os
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from segwal.errors import MissingKeyError
from segwal.format.cipher import CIPHER_AES_256_GCM, CIPHER_CHACHA20_POLY1305, SegmentKey


class CounterKeys:
    """``SegmentKeys`` for tests: one secret, HKDF per segment, counter nonces."""

    def __init__(
        self,
        secret: bytes = bytes(range(32)),
        *,
        key_id: int = 1,
        cipher_id: int = CIPHER_AES_256_GCM,
        keep_prefix: bool = False,
    ) -> None:
        self.secret = secret
        self.key_id = key_id
        self.cipher_id = cipher_id
        # keep_prefix: the faulty writer the nonce-uniqueness test must catch (one prefix
        # for ever, so a resume reuses nonces under the same key).
        self.keep_prefix = keep_prefix
        self._fixed = os.urandom(8)
        self.used: list[tuple[bytes, bytes]] = []  # (derived key, nonce) of every encryption
        self.writing_calls = 0

    def _derive(self, log_id: bytes, sequence: int, first_lsn: int, salt: bytes) -> bytes:
        info = b"segwal test" + log_id + struct.pack("<QQ", sequence, first_lsn)
        return HKDF(hashes.SHA256(), 32, salt, info).derive(self.secret)

    def _key(
        self, log_id: bytes, sequence: int, first_lsn: int, key_id: int, salt: bytes
    ) -> SegmentKey:
        raw = self._derive(log_id, sequence, first_lsn, salt)
        aead = AESGCM(raw) if self.cipher_id == CIPHER_AES_256_GCM else ChaCha20Poly1305(raw)
        prefix = self._fixed if self.keep_prefix else os.urandom(8)
        counter = itertools.count()
        used = self.used

        def next_nonce() -> bytes:
            nonce = prefix + struct.pack("<I", next(counter))
            used.append((raw, nonce))
            return nonce

        return SegmentKey(self.cipher_id, key_id, salt, aead, next_nonce)

    def for_new_segment(self, log_id: bytes, sequence: int, first_lsn: int) -> SegmentKey:
        self.writing_calls += 1
        return self._key(log_id, sequence, first_lsn, self.key_id, os.urandom(16))

    def for_segment(
        self,
        log_id: bytes,
        sequence: int,
        first_lsn: int,
        key_id: int,
        salt: bytes,
        *,
        writing: bool,
    ) -> SegmentKey:
        if key_id != self.key_id:
            # As the real key ring does (segwal.format.keyring): a typed, named error.
            raise MissingKeyError(f"no log key {key_id}", key_id=key_id)
        self.writing_calls += writing
        return self._key(log_id, sequence, first_lsn, key_id, salt)


__all__ = ["CIPHER_CHACHA20_POLY1305", "CounterKeys"]
