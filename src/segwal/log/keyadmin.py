"""Managing an encrypted log's keys while no writer has it open: listing them, rewrapping
them under a new key-encryption key, adding a log key for new segments, and deleting one
(crypto-shredding).

Each change replaces ``KEYS`` atomically (``storage.keys``) under the writer lock, and none
touches a segment:

- rewrapping (``new_kek``) seals the same log keys under the new KEK, with fresh wrap
  nonces: once it returns the old KEK opens nothing, and may be destroyed;
- a new log key gets the next key id and becomes current: the next writer encrypts new
  segments with it; segments of older keys stay readable while their key is in KEYS;
- deleting a key (never the current one) makes every segment it encrypted unreadable for
  good, here and in every copy whose KEYS lacks it. That is the point of it.

The lock is taken without publishing in LOCK, so readers keep what the last writer said.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable

from segwal.errors import ConfigError, LockError, MissingKeyError
from segwal.format import keys as keyfile
from segwal.format.features import HEADER_ENCRYPTED
from segwal.format.keyring import CIPHER_IDS, MAX_KEY_ID, RandomBytes, cipher_name
from segwal.format.naming import LOCK_NAME
from segwal.log.encryption import KeyProvider
from segwal.storage import keys as keystore
from segwal.storage.fileio import FileSystem
from segwal.types import KeyInfo


def _infos(stored: keyfile.KeysFile) -> tuple[KeyInfo, ...]:
    return tuple(
        KeyInfo(
            key_id=e.key_id,
            cipher=cipher_name(e.cipher_id),
            created_us=e.created_us,
            current=e.key_id == stored.current,
        )
        for e in stored.entries
    )


def _load(fs: FileSystem, directory: str) -> keyfile.KeysFile:
    stored = keystore.load(fs, directory)
    if stored is None:
        raise MissingKeyError(
            f"the log in {directory} is not encrypted (it has no {keystore.KEYS_NAME})",
            path=keystore.keys_path(directory),
        )
    return stored


def list_keys(fs: FileSystem, directory: str) -> tuple[KeyInfo, ...]:
    """The log keys KEYS holds, oldest first; needs no key."""
    return _infos(_load(fs, directory))


class _Locked:
    """The writer lock, held while KEYS changes, without writing LOCK."""

    def __init__(self, fs: FileSystem, directory: str) -> None:
        self.handle = fs.lock(posixpath.join(directory, LOCK_NAME), exclusive=True)
        if self.handle is None:
            raise LockError(directory, None)

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        assert self.handle is not None
        self.handle.close()


def rotate_keys(
    fs: FileSystem,
    directory: str,
    kek: KeyProvider,
    *,
    new_kek: KeyProvider | None = None,
    new_log_key: bool = False,
    cipher: str | None = None,
    now_us: int,
    random: RandomBytes = os.urandom,
) -> tuple[KeyInfo, ...]:
    """Rewrap the log keys under ``new_kek`` and/or add a log key for new segments (of
    ``cipher``, by default the current key's). WrongKeyError when ``kek`` is not the log's."""
    if new_kek is None and not new_log_key:
        raise ConfigError("nothing to rotate: give new_kek, new_log_key or both", option="new_kek")
    if cipher is not None and cipher not in CIPHER_IDS:
        raise ConfigError(f"cipher must be one of {sorted(CIPHER_IDS)}, not {cipher!r}")
    if cipher is not None and not new_log_key:
        raise ConfigError("a cipher applies to a new log key: add new_log_key", option="cipher")
    _load(fs, directory)  # no KEYS: say so before taking the lock
    with _Locked(fs, directory):
        stored = _load(fs, directory)
        path = keystore.keys_path(directory)
        log_keys = keyfile.unseal(kek.kek(), stored, path)
        current = stored.current
        if new_log_key:
            current = max(k.key_id for k in log_keys) + 1
            if current > MAX_KEY_ID or len(log_keys) >= keyfile.MAX_KEYS:
                raise ConfigError("the key ring is full: delete old keys first")
            cipher_id = CIPHER_IDS[cipher] if cipher is not None else stored.cipher_id
            log_keys.append(keyfile.new_log_key(current, cipher_id, now_us, random))
        wrapping = (new_kek or kek).kek()
        updated = keyfile.seal(wrapping, stored.log_id, log_keys, current, random)
        keystore.store(fs, directory, updated)
    return _infos(updated)


def delete_keys(fs: FileSystem, directory: str, key_ids: Iterable[int]) -> tuple[KeyInfo, ...]:
    """Remove log keys from KEYS for good: the segments they encrypted become unreadable
    (crypto-shredding). Never the current key; needs no KEK (the others stay as wrapped)."""
    doomed = set(key_ids)
    with _Locked(fs, directory):
        stored = _load(fs, directory)
        held = {e.key_id for e in stored.entries}
        if missing := doomed - held:
            raise MissingKeyError(
                f"KEYS holds no key {sorted(missing)} (it holds {sorted(held)})",
                path=keystore.keys_path(directory),
                key_id=min(missing),
            )
        if stored.current in doomed:
            raise ConfigError(
                f"key {stored.current} is the current key: rotate to a new log key first",
                option="key_id",
            )
        newest = keystore.newest_segment(fs, directory)
        active = None if newest is None else newest[1]
        if active is not None and active.flags & HEADER_ENCRYPTED and active.key_id in doomed:
            # The writer resumes the active segment with the key it was begun with.
            raise ConfigError(
                f"key {active.key_id} encrypts the active segment (the next writer appends "
                "to it): delete it once that segment is sealed and a newer one exists",
                option="key_id",
            )
        kept = tuple(e for e in stored.entries if e.key_id not in doomed)
        updated = keyfile.KeysFile(log_id=stored.log_id, current=stored.current, entries=kept)
        keystore.store(fs, directory, updated)
    return _infos(updated)
