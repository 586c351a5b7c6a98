"""An encrypted log's wrapped keys in the archive: ``keys/<digest>.keys``.

The object is the log directory's ``KEYS`` file byte for byte (``docs/FORMAT.md``, "KEYS
file": every log key wrapped under the key-encryption key, with a CRC), named by the
BLAKE3 digest of those bytes (64 hex digits) and created once with ``put_if_absent``.
Content-addressed, so:

- an upload repeated after a lost answer or a crash hits the same name with the same
  bytes (an equal 412 is success), and two different key sets never share a name;
- a rewrap under a new KEK (``segwal keys rotate --new-kek``) or a new log key changes
  the bytes and so the name: the uploader uploads it before the next segment, and the
  objects of older key sets stay (a restore to an older point may need one).

Metadata: ``digest``, ``log-id`` (hex), ``key-ids`` (comma separated, ascending) and
``uploaded-us`` (the uploader's clock when it uploaded this key set: the order of rewraps,
which do not change key ids). Every read checks the digest against the name, the CRC, and
the log id against ``ARCHIVE``; none needs the KEK.

Which key set a restore or a mirror writes as ``KEYS``: the newest (by ``uploaded-us``)
of those holding every key id the segments need. Nothing here unwraps a key: a wrong KEK
shows when the restored log is opened (``WrongKeyError``).
"""

from __future__ import annotations

import posixpath
import re
import time
from dataclasses import dataclass
from typing import Final

from segwal.archive.objects import digest_of, retrying
from segwal.archive.state import write_atomic
from segwal.archive.store import ObjectStore
from segwal.errors import (
    ArchiveConflictError,
    ArchiveCorruptError,
    ArchiveNotFoundError,
    CorruptionError,
    UnsupportedFormatError,
)
from segwal.format import keys as keyfile
from segwal.format.naming import KEYS_NAME, KEYS_TEMP_NAME
from segwal.log.sidefiles import FileSystem, read_small

KEYS_PREFIX: Final = "keys/"
_KEYS_KEY = re.compile(r"keys/([0-9a-f]{64})\.keys", re.ASCII)


def keys_key(digest: str) -> str:
    return f"{KEYS_PREFIX}{digest}.keys"


def parse_keys_key(key: str) -> str | None:
    """The digest a keys object's name carries, or None for any other key."""
    found = _KEYS_KEY.fullmatch(key)
    return None if found is None else found[1]


def read_local(directory: str, fs: FileSystem | None = None) -> bytes | None:
    """The log directory's ``KEYS`` bytes (through ``fs``, the log's file system), or None
    for a log that is not encrypted."""
    return read_small(fs, posixpath.join(directory, KEYS_NAME), keyfile.MAX_SIZE)


def install(directory: str, data: bytes) -> None:
    """Write ``data`` as the directory's ``KEYS``, durably (temp file, fsync, rename,
    directory fsync), before any segment that needs it is written."""
    write_atomic(directory, KEYS_NAME, data, temp_name=KEYS_TEMP_NAME)  # as storage.keys


@dataclass(frozen=True, slots=True)
class ArchivedKeys:
    """One checked keys object."""

    key: str
    digest: str
    data: bytes
    keys: keyfile.KeysFile
    uploaded_us: int

    @property
    def key_ids(self) -> frozenset[int]:
        return frozenset(e.key_id for e in self.keys.entries)


def check(data: bytes, *, key: str, url: str, log_id: bytes | None) -> keyfile.KeysFile:
    """The key set a keys object holds: its digest is its name's, its CRC holds and it
    belongs to ``log_id`` (when known). ArchiveCorruptError otherwise."""
    digest = parse_keys_key(key)
    if digest is None or digest_of(data).hex() != digest:
        raise ArchiveCorruptError("the digest of the key set is not its name's", url=url, key=key)
    try:
        keys = keyfile.decode(data, key)
    except (CorruptionError, UnsupportedFormatError) as exc:
        raise ArchiveCorruptError(f"not a KEYS file: {exc}", url=url, key=key) from None
    if log_id is not None and keys.log_id != log_id:
        raise ArchiveCorruptError(
            f"the key set belongs to log {keys.log_id.hex()}, the archive to {log_id.hex()}",
            url=url,
            key=key,
        )
    return keys


def upload(store: ObjectStore, data: bytes, *, now_us: int | None = None) -> str:
    """Create the keys object for ``data`` (a KEYS file) unless it is there; its digest."""
    keys = keyfile.decode(data, KEYS_NAME)
    digest = digest_of(data).hex()
    key = keys_key(digest)
    metadata = {
        "digest": digest,
        "log-id": keys.log_id.hex(),
        "key-ids": ",".join(str(e.key_id) for e in keys.entries),
        "uploaded-us": str(time.time_ns() // 1000 if now_us is None else now_us),
    }
    if not store.put_if_absent(key, data, metadata) and store.get(key) != data:
        raise ArchiveConflictError(  # only a tampered store: the name is the digest
            "another key set is stored under this key set's digest",
            url=store.url,
            key=key,
        )
    return digest


def load(
    store: ObjectStore,
    key: str,
    *,
    log_id: bytes | None,
    attempts: int = 6,
    base_delay: float = 0.2,
) -> ArchivedKeys:
    """One keys object, fetched (HEAD for the metadata, GET) and checked."""
    url = store.url

    def head_and_get() -> tuple[bytes, dict[str, str]]:
        info = store.head(key)
        if info is None:
            raise ArchiveNotFoundError("the key set is gone", url=url, key=key)
        return store.get(key), dict(info.metadata)

    data, metadata = retrying(head_and_get, attempts=attempts, base_delay=base_delay)
    keys = check(data, key=key, url=url, log_id=log_id)
    try:
        uploaded = int(metadata.get("uploaded-us", "0"))
    except ValueError:
        uploaded = 0
    return ArchivedKeys(key, digest_of(data).hex(), data, keys, uploaded)


def list_keys(
    store: ObjectStore, *, log_id: bytes | None, attempts: int = 6, base_delay: float = 0.2
) -> tuple[list[ArchivedKeys], list[ArchiveCorruptError]]:
    """Every keys object (one LIST of ``keys/``, a HEAD and a GET each), checked; the
    damaged ones are returned apart, named."""
    infos = retrying(
        lambda: list(store.list(KEYS_PREFIX)), attempts=attempts, base_delay=base_delay
    )
    found: list[ArchivedKeys] = []
    bad: list[ArchiveCorruptError] = []
    for info in infos:
        try:
            found.append(
                load(store, info.key, log_id=log_id, attempts=attempts, base_delay=base_delay)
            )
        except ArchiveCorruptError as exc:
            bad.append(exc)
    return found, bad


def choose(candidates: list[ArchivedKeys], needed: set[int]) -> ArchivedKeys | None:
    """The newest key set holding every key id in ``needed`` (None when none does)."""
    covering = [c for c in candidates if needed <= c.key_ids]
    if not covering:
        return None
    return max(covering, key=lambda c: (c.uploaded_us, max(c.key_ids), c.digest))


def fetch_for(
    store: ObjectStore, needed: set[int], *, log_id: bytes | None, where: str
) -> ArchivedKeys:
    """The key set to write beside segments needing ``needed``; ArchiveNotFoundError
    naming the key ids when the archive holds none that has them all."""
    candidates, bad = list_keys(store, log_id=log_id)
    chosen = choose(candidates, needed)
    if chosen is None:
        damaged = f" ({len(bad)} damaged key sets: {bad[0]})" if bad else ""
        raise ArchiveNotFoundError(
            f"{where} needs log key ids {sorted(needed)}, and no key set in the archive "
            f"holds them all{damaged}",
            url=store.url,
            key=KEYS_PREFIX,
        )
    return chosen
