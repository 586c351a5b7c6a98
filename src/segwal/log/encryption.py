"""Encryption at rest, as configured and as opened: where the key-encryption key comes from
(``RawKey``, ``KeyFile``, ``EnvKey``, ``KeyCallback``), the ``Encryption`` options, and what
opening a log does with ``KEYS``.

Opening an encrypted log, in the order ``docs/SECURITY.md`` gives:

1. Before the writer lock is taken (so a wrong key leaves even LOCK as it was): read and
   check ``KEYS`` and unwrap its log keys with the KEK. A wrong KEK raises
   ``WrongKeyError``; an encrypted log opened for writing without a key raises
   ``MissingKeyError``. Nothing has been written yet.
2. Under the lock, after recovery has planned (read only) and before it acts: read KEYS
   again (another writer may have created or rotated it in between), and check that it
   belongs to this log (its log id is the segments').
3. Before the active segment is started: a log opened with a key and without KEYS (a new
   log, or a plaintext log that becomes encrypted) gets a fresh log key, and KEYS is made
   durable before any encrypted segment can exist.
"""

from __future__ import annotations

import base64
import binascii
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from segwal.errors import ConfigError, ContinuityError, MissingKeyError
from segwal.format import keys as keyfile
from segwal.format.features import HEADER_ENCRYPTED
from segwal.format.keyring import (
    CIPHER_IDS,
    KEY_BYTES,
    KeyRing,
    LogKey,
    NoncePolicy,
    RandomBytes,
    fresh_nonces,
)
from segwal.format.layout import SegmentHeader
from segwal.storage import keys as keystore
from segwal.storage.fileio import FileSystem
from segwal.storage.recovery import Plan

FIRST_KEY_ID = 1


@runtime_checkable
class KeyProvider(Protocol):
    """Where a key-encryption key comes from: ``kek()`` returns its 32 bytes.

    Called once per open (and per rotation); segwal keeps only the unwrapped log keys."""

    def kek(self) -> bytes: ...


def _key_bytes(raw: object, source: str) -> bytes:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise ConfigError(f"{source} gave {type(raw).__name__}, not 32 bytes", option="encryption")
    key = bytes(raw)
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"{source} gave {len(key)} bytes; a key-encryption key is {KEY_BYTES} bytes",
            option="encryption",
        )
    return key


def _decode_text(text: bytes, source: str, *, raw: bool) -> bytes:
    """64 hex digits or base64 of 32 bytes (whitespace around ignored), or with ``raw`` (a
    file) 32 raw bytes. Never 32 characters of text: a passphrase is not a key."""
    if raw and len(text) == KEY_BYTES:
        return text
    stripped = text.strip()
    try:
        if len(stripped) == 2 * KEY_BYTES:
            return bytes.fromhex(stripped.decode("ascii"))
        return _key_bytes(base64.b64decode(stripped, validate=True), source)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ConfigError(
            f"{source} holds neither 64 hex digits nor 32 bytes in base64"
            + (" nor 32 raw bytes" if raw else ""),
            option="encryption",
        ) from None


@dataclass(frozen=True, slots=True)
class RawKey:
    """A key-encryption key given as 32 bytes (kept out of ``repr``)."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", _key_bytes(self.key, "RawKey"))

    def kek(self) -> bytes:
        return self.key


@dataclass(frozen=True, slots=True)
class KeyFile:
    """A key-encryption key read from a file at each open: 32 raw bytes, 64 hex digits or
    base64 (a trailing newline is fine). Keep the file outside the log directory."""

    path: str | os.PathLike[str]

    def kek(self) -> bytes:
        source = f"key file {os.fspath(self.path)}"
        try:
            with open(self.path, "rb") as handle:
                text = handle.read(4 * KEY_BYTES + 1)  # never more than a key can take
        except OSError as exc:
            raise MissingKeyError(f"{source}: {exc.strerror or exc}") from None
        return _decode_text(text, source, raw=True)


@dataclass(frozen=True, slots=True)
class EnvKey:
    """A key-encryption key from an environment variable: 64 hex digits or base64."""

    name: str

    def kek(self) -> bytes:
        value = os.environ.get(self.name)
        if not value:
            raise MissingKeyError(f"environment variable {self.name} is not set")
        return _decode_text(value.encode(), f"environment variable {self.name}", raw=False)


@dataclass(frozen=True, slots=True)
class KeyCallback:
    """A key-encryption key from a callable, e.g. one that asks a KMS to decrypt a data key."""

    fetch: Callable[[], bytes]

    def kek(self) -> bytes:
        return _key_bytes(self.fetch(), "the key callback")


@dataclass(frozen=True, slots=True, kw_only=True)
class Encryption:
    """Encryption options: the KEK's provider, and the cipher of log keys made from now on
    (``"aes-256-gcm"``, or ``"chacha20-poly1305"`` for CPUs without AES instructions).

    ``random`` is the source of keys, salts and nonce prefixes (``os.urandom``) and
    ``nonces`` how a writer's nonces are made (a fresh prefix per writing key); tests inject
    them to see every draw, and a broken policy to show the nonce-reuse test catches it."""

    kek: KeyProvider
    cipher: str = "aes-256-gcm"
    random: RandomBytes = field(default=os.urandom, repr=False)
    nonces: NoncePolicy = field(default=fresh_nonces, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.kek, bytes | bytearray | memoryview):
            object.__setattr__(self, "kek", RawKey(bytes(self.kek)))
        if not isinstance(self.kek, KeyProvider):
            raise ConfigError(
                "encryption's kek must be 32 bytes or a key provider (KeyFile, EnvKey, "
                f"KeyCallback, RawKey), not {type(self.kek).__name__}",
                option="encryption",
            )
        if self.cipher not in CIPHER_IDS:
            raise ConfigError(
                f"cipher must be one of {sorted(CIPHER_IDS)}, not {self.cipher!r}",
                option="encryption",
            )

    @property
    def cipher_id(self) -> int:
        return CIPHER_IDS[self.cipher]


def encryption_option(value: object) -> Encryption | None:
    """``WalConfig.encryption`` from what the user gave: None, 32 bytes, a provider or
    ``Encryption``."""
    if value is None or isinstance(value, Encryption):
        return value
    if isinstance(value, bytes | bytearray | memoryview | KeyProvider):
        return Encryption(kek=value)  # type: ignore[arg-type]
    raise ConfigError(
        "encryption must be 32 bytes, a key provider or segwal.Encryption, not "
        f"{type(value).__name__}",
        option="encryption",
    )


@dataclass(slots=True)
class OpenedKeys:
    """What step 1 found: KEYS's bytes as read (None: no KEYS) and their ring."""

    raw: bytes | None
    ring: KeyRing | None


def unlock(
    fs: FileSystem, directory: str, options: Encryption | None, *, writing: bool
) -> OpenedKeys:
    """Step 1: read KEYS and unwrap it (WrongKeyError, MissingKeyError, CorruptionError,
    UnsupportedFormatError); changes nothing."""
    raw = keystore.read_raw(fs, directory)
    if raw is None:
        if writing:
            newest = keystore.newest_segment(fs, directory)
            _check_not_lost(directory, newest[0] if newest and _encrypted(newest[1]) else None)
        return OpenedKeys(None, None)
    path = keystore.keys_path(directory)
    stored = keyfile.decode(raw, path)
    if options is None:
        if writing:
            raise MissingKeyError(
                f"the log in {directory} is encrypted (it has {keystore.KEYS_NAME}): open it "
                "with encryption_key= or encryption=",
                path=path,
            )
        return OpenedKeys(raw, None)  # readonly: payloads stay sealed, the rest is readable
    kek = options.kek.kek()
    ring = keyfile.open_ring(kek, stored, path, random=options.random, nonces=options.nonces)
    _check_bound(ring, keystore.newest_log_id(fs, directory), directory)
    if not writing:
        ring.refresh = lambda: _reread(fs, directory, kek)
    return OpenedKeys(raw, ring)


def _reread(fs: FileSystem, directory: str, kek: bytes) -> list[LogKey]:
    """The log keys KEYS holds now (a readonly view's refresh; the KEK it opened with)."""
    stored = keystore.load(fs, directory)
    path = keystore.keys_path(directory)
    return [] if stored is None else keyfile.unseal(kek, stored, path)


def _encrypted(header: SegmentHeader) -> bool:
    return bool(header.flags & HEADER_ENCRYPTED)


def _check_not_lost(directory: str, encrypted: str | None) -> None:
    if encrypted is not None:
        raise MissingKeyError(
            f"{encrypted} is encrypted but the log has no {keystore.KEYS_NAME} file: restore "
            "it from a copy of the log (nothing was changed)",
            path=keystore.keys_path(directory),
        )


def _check_bound(ring: KeyRing | None, log_id: bytes | None, directory: str) -> None:
    if ring is not None and log_id is not None and ring.log_id != log_id:
        raise ContinuityError(
            f"{keystore.KEYS_NAME} belongs to log {ring.log_id.hex()}, the segments to log "
            f"{log_id.hex()}",
            path=keystore.keys_path(directory),
        )


def recheck(
    fs: FileSystem,
    directory: str,
    options: Encryption | None,
    opened: OpenedKeys,
    log_id: bytes | None,
    encrypted: str | None,
) -> OpenedKeys:
    """Step 2, under the writer lock: KEYS as it is now, and bound to the log ``log_id``
    (the segments'; None for a log without segments). ``encrypted`` names a segment whose
    header says it is encrypted, if any: such a log without KEYS has lost its keys, and a
    writer must not make new ones (its segments would then fail to authenticate)."""
    if keystore.read_raw(fs, directory) != opened.raw:
        opened = unlock(fs, directory, options, writing=True)
    if opened.raw is None:
        _check_not_lost(directory, encrypted)
    _check_bound(opened.ring, log_id, directory)
    if opened.raw is not None:
        keystore.settle(fs, directory)
    return opened


def ensure(
    fs: FileSystem,
    directory: str,
    options: Encryption | None,
    opened: OpenedKeys,
    log_id: bytes | None,
    now_us: int,
) -> KeyRing | None:
    """Step 3: the ring new segments are encrypted with; a log opened with a key and without
    KEYS gets its first log key, durable in KEYS before this returns."""
    if opened.ring is not None or options is None:
        return opened.ring
    log_id = log_id if log_id is not None else uuid.uuid4().bytes
    first = keyfile.new_log_key(FIRST_KEY_ID, options.cipher_id, now_us, options.random)
    kek = options.kek.kek()
    stored = keyfile.seal(kek, log_id, [first], FIRST_KEY_ID, options.random)
    keystore.store(fs, directory, stored)
    return KeyRing(
        log_id,
        [first],
        FIRST_KEY_ID,
        path=keystore.keys_path(directory),
        random=options.random,
        nonces=options.nonces,
    )


class KeysAtOpen:
    """The three steps for one open of a log, in order; all of them do nothing when the
    caller brought a key ring of its own (``WalConfig.keys``: no KEYS file)."""

    def __init__(
        self,
        fs: FileSystem,
        directory: str,
        options: Encryption | None,
        *,
        own_ring: bool,
        writing: bool,
    ) -> None:
        self.fs, self.directory, self.options = fs, directory, options
        self.managed = not own_ring
        self.opened = (
            unlock(fs, directory, options, writing=writing)
            if self.managed
            else OpenedKeys(None, None)
        )

    @property
    def ring(self) -> KeyRing | None:
        return self.opened.ring

    def under_lock(self, found: Plan) -> KeyRing | None:
        """Step 2: the ring recovery may need (None: no KEYS yet, or a ring of the caller's)."""
        if not self.managed:
            return None
        encrypted = next(
            (s.path for s in found.segments if s.header.flags & HEADER_ENCRYPTED), None
        )
        self.opened = recheck(
            self.fs, self.directory, self.options, self.opened, found.log_id, encrypted
        )
        return self.opened.ring

    def ensure(self, log_id: bytes | None, now_us: int) -> KeyRing | None:
        """Step 3: the ring new segments use, KEYS made for it if the log had none."""
        if not self.managed:
            return None
        return ensure(self.fs, self.directory, self.options, self.opened, log_id, now_us)
