"""Keys of an encrypted log: the ciphers, wrapping a log key under a key-encryption key, the
per-segment key derivation, the nonce source, and the key ring the frame codec asks.

Pure: bytes in, bytes out, no files (``storage.keys`` reads and writes ``KEYS``). Two tiers
plus one derived key per segment:

- a **key-encryption key** (KEK, 32 bytes) the user holds (a file, an environment variable,
  a KMS): it only wraps log keys, with AES-256-GCM, associated data = log id + key id, so a
  wrapped key copied into another log or under another id does not unwrap;
- **log keys** (32 random bytes each, numbered by key id from 1), wrapped in ``KEYS``;
- a **segment key** = HKDF-SHA256(log key, salt = 16 fresh bytes per segment file creation,
  info naming the format, log id, cipher, key id, sequence and first LSN), so no two segment
  files, rewrites included, share a key even when they hold the same LSNs.

Nonces are 12 bytes: a random 8-byte prefix and a 32-bit counter. The prefix is drawn anew for
every ``SegmentKey`` handed out for writing (a new segment, a resumed tail, a rewrite), and
again before the counter wraps, so a writer never repeats a (key, nonce) pair even when it
writes the same LSNs twice; a child forked from the writer cannot draw from the parent's
source (``ForkedError``). ``cryptography`` is imported on first use, with the install hint.
"""

from __future__ import annotations

import itertools
import os
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from segwal.errors import ContinuityError, ForkedError, MissingKeyError, UnsupportedFormatError
from segwal.format.cipher import (
    CIPHER_AES_256_GCM,
    CIPHER_CHACHA20_POLY1305,
    CIPHERS,
    FrameAead,
    SegmentKey,
)

KEY_BYTES: Final = 32
SALT_BYTES: Final = 16
NONCE_BYTES: Final = 12
PREFIX_BYTES: Final = 8
WRAPPED_BYTES: Final = KEY_BYTES + 16  # the key and AES-GCM's 16-byte tag
COUNTER_LIMIT: Final = 1 << 32  # nonces per prefix; the prefix is redrawn before this
MAX_KEY_ID: Final = (1 << 32) - 1

AES_256_GCM: Final = CIPHER_AES_256_GCM
CHACHA20_POLY1305: Final = CIPHER_CHACHA20_POLY1305
CIPHER_IDS: Final = {name: cipher_id for cipher_id, name in CIPHERS.items()}
INSTALL_HINT: Final = 'install it with: pip install "segwal[crypto]"'
SEGMENT_INFO: Final = b"segwal v2 segment key"
_INFO = struct.Struct("<16sBIQQ")  # log id, cipher id, key id, sequence, first LSN
_WRAP_AD = struct.Struct("<16sI")  # log id, key id

RandomBytes = Callable[[int], bytes]

# Counts forks in this process's ancestry: a nonce source born under another count belongs
# to a parent, and drawing from it in a child would repeat the parent's nonces.
_forks = 0


def _after_fork_in_child() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


def _backend() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers import aead
    except ImportError:
        raise UnsupportedFormatError(
            "encryption needs the 'cryptography' package", hint=INSTALL_HINT
        ) from None
    return aead


def cipher_name(cipher_id: int) -> str:
    """``aes-256-gcm`` for 1; UnsupportedFormatError for an id this segwal does not know."""
    try:
        return CIPHERS[cipher_id]
    except KeyError:
        raise UnsupportedFormatError(
            f"unknown cipher id {cipher_id} (this segwal knows {sorted(CIPHERS)}): "
            "it needs a newer segwal"
        ) from None


def aead_for(cipher_id: int, key: bytes) -> FrameAead:
    """The AEAD object of cipher ``cipher_id`` keyed with ``key`` (32 bytes)."""
    cipher_name(cipher_id)
    aead = _backend()
    if cipher_id == AES_256_GCM:
        return aead.AESGCM(key)  # type: ignore[no-any-return]
    return aead.ChaCha20Poly1305(key)  # type: ignore[no-any-return]


def check_key(key: object, what: str = "key") -> bytes:
    """``key`` as 32 bytes, or a TypeError/ValueError naming ``what``."""
    if not isinstance(key, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be 32 bytes, not {type(key).__name__}")
    raw = bytes(key)
    if len(raw) != KEY_BYTES:
        raise ValueError(f"{what} must be {KEY_BYTES} bytes, not {len(raw)}")
    return raw


def wrap_log_key(kek: bytes, log_id: bytes, key_id: int, log_key: bytes, nonce: bytes) -> bytes:
    """``log_key`` sealed under ``kek`` (48 bytes), bound to ``log_id`` and ``key_id``."""
    ad = _WRAP_AD.pack(log_id, key_id)
    return aead_for(AES_256_GCM, kek).encrypt(nonce, log_key, ad)


def unwrap_log_key(
    kek: bytes, log_id: bytes, key_id: int, nonce: bytes, wrapped: bytes
) -> bytes | None:
    """The log key ``wrapped`` seals, or None when ``kek`` (or the binding) is not the one."""
    aead = aead_for(AES_256_GCM, kek)  # first: a missing cryptography is a typed error
    from cryptography.exceptions import InvalidTag

    ad = _WRAP_AD.pack(log_id, key_id)
    try:
        return aead.decrypt(nonce, wrapped, ad)
    except InvalidTag:
        return None


def derive_segment_key(
    log_key: bytes,
    salt: bytes,
    *,
    log_id: bytes,
    cipher_id: int,
    key_id: int,
    sequence: int,
    first_lsn: int,
) -> bytes:
    """HKDF-SHA256 of the log key for one segment file (``salt`` is fresh per file)."""
    _backend()
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    info = SEGMENT_INFO + _INFO.pack(log_id, cipher_id, key_id, sequence, first_lsn)
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=info).derive(log_key)


class NonceSource:
    """12-byte nonces: a random 8-byte prefix and a 32-bit big-endian counter.

    One source per ``SegmentKey`` handed out for writing; thread-safe. ``random`` is
    injectable so that tests can see every prefix drawn.
    """

    __slots__ = ("_counter", "_forks", "_limit", "_lock", "_pid", "_random", "prefixes")

    def __init__(self, random: RandomBytes = os.urandom, *, limit: int = COUNTER_LIMIT) -> None:
        self._random = random
        self._limit = limit  # nonces per prefix (smaller only in tests)
        self._lock = threading.Lock()
        self._forks = _forks
        self._pid = os.getpid()
        self.prefixes: list[bytes] = []  # every prefix drawn, the current one last
        self._redraw()

    def _redraw(self) -> None:
        prefix = self._random(PREFIX_BYTES)
        if len(prefix) != PREFIX_BYTES:
            raise ValueError(f"the random source gave {len(prefix)} bytes, not {PREFIX_BYTES}")
        self.prefixes.append(prefix)
        self._counter = itertools.count()

    def __call__(self) -> bytes:
        if self._forks != _forks:
            raise ForkedError(os.getpid(), self._pid)
        with self._lock:
            n = next(self._counter)
            if n >= self._limit:
                self._redraw()
                n = next(self._counter)
            return self.prefixes[-1] + n.to_bytes(4, "big")


def _no_nonce() -> bytes:
    raise RuntimeError("a segment key handed out for reading cannot encrypt")


# How a writer's nonces are made for a segment key: given the segment's salt and the random
# source. The ring's default draws a fresh prefix every time; tests inject broken policies
# to show that the nonce-reuse test catches them.
NoncePolicy = Callable[[bytes, RandomBytes], Callable[[], bytes]]


def fresh_nonces(salt: bytes, random: RandomBytes) -> Callable[[], bytes]:
    return NonceSource(random)


@dataclass(frozen=True, slots=True, kw_only=True)
class LogKey:
    """One unwrapped log key."""

    key_id: int
    cipher_id: int
    key: bytes
    created_us: int


class KeyRing:
    """The log keys of one log, unwrapped: implements ``SegmentKeys``.

    New segments use the current key (and its cipher); existing segments name theirs by id,
    and a segment whose key is no longer in the ring raises ``MissingKeyError``.
    """

    def __init__(
        self,
        log_id: bytes,
        keys: Iterable[LogKey],
        current: int,
        *,
        random: RandomBytes = os.urandom,
        nonces: NoncePolicy = fresh_nonces,
        path: str | None = None,
    ) -> None:
        self.log_id = log_id
        self.keys = {k.key_id: k for k in keys}
        if current not in self.keys:
            raise MissingKeyError(f"current key {current} is not in the ring", key_id=current)
        self.current = current
        # Where a readonly view finds log keys added since it opened (None: nowhere).
        self.refresh: Callable[[], Iterable[LogKey]] | None = None
        self._refresh_lock = threading.Lock()
        self.cipher_id = self.keys[current].cipher_id  # new segments' cipher: the current key's
        self.path = path
        self._random = random
        self._nonces = nonces
        for k in self.keys.values():
            cipher_name(k.cipher_id)

    def _key(self, key_id: int) -> LogKey:
        found = self.keys.get(key_id)
        if found is None and self.refresh is not None:
            # A readonly view outlives rotations: a writer may have begun segments under a
            # log key that was added after this view read KEYS.
            with self._refresh_lock:
                for k in self.refresh():
                    self.keys.setdefault(k.key_id, k)
            found = self.keys.get(key_id)
        if found is None:
            raise MissingKeyError(
                f"log key {key_id} is not in the key ring (held: {sorted(self.keys)}); a "
                "deleted key makes the segments it encrypted unreadable",
                path=self.path,
                key_id=key_id,
            )
        return found

    def _check_log(self, log_id: bytes) -> None:
        if log_id != self.log_id:
            raise ContinuityError(
                f"the key ring belongs to log {self.log_id.hex()}, the segment to {log_id.hex()}",
                path=self.path,
            )

    def _segment_key(
        self, key: LogKey, salt: bytes, log_id: bytes, sequence: int, first_lsn: int
    ) -> FrameAead:
        raw = derive_segment_key(
            key.key,
            salt,
            log_id=log_id,
            cipher_id=key.cipher_id,
            key_id=key.key_id,
            sequence=sequence,
            first_lsn=first_lsn,
        )
        return aead_for(key.cipher_id, raw)

    def for_new_segment(self, log_id: bytes, sequence: int, first_lsn: int) -> SegmentKey:
        self._check_log(log_id)
        key = self.keys[self.current]
        salt = self._random(SALT_BYTES)
        aead = self._segment_key(key, salt, log_id, sequence, first_lsn)
        return SegmentKey(key.cipher_id, key.key_id, salt, aead, self._nonces(salt, self._random))

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
        self._check_log(log_id)
        key = self._key(key_id)
        if writing:
            # A resumed or rewritten segment keeps its salt (hence its key): only a fresh
            # nonce prefix keeps it from repeating a nonce the earlier writer used.
            aead = self._segment_key(key, salt, log_id, sequence, first_lsn)
            return SegmentKey(key.cipher_id, key_id, salt, aead, self._nonces(salt, self._random))
        # Readers' keys are cached by the caller (storage.coding), one HKDF per segment.
        aead = self._segment_key(key, salt, log_id, sequence, first_lsn)
        return SegmentKey(key.cipher_id, key_id, salt, aead, _no_nonce)
