"""A log's compression dictionaries in the archive: ``dicts/<digest>.zdict``.

The object is the log directory's ``{digest}.zdict`` file byte for byte (``docs/FORMAT.md``,
"Compression dictionary file"), under the same name: the BLAKE3 digest of the dictionary's
content, which the file itself carries and checks. Created once with ``put_if_absent``,
before the first segment that names its id is uploaded (the uploader), and installed in a
restored or mirrored directory before the segments that name it (``restore``, ``mirror``),
the way ``keyobjects`` handles ``KEYS``:

- content-addressed: an upload repeated after a lost answer or a crash hits the same name
  with the same bytes (an equal 412 is success), and two dictionaries never share a name;
- archive retention deletes segments only, so a dictionary object outlives every segment
  that names it (a restore to an older point may need it).

A segment names its dictionary by a 4-byte id (the first 4 bytes of the digest), so a reader
lists ``dicts/<8 hex digits>`` and refuses two objects under one id.
"""

from __future__ import annotations

import os
import posixpath
from typing import Final

from segwal.archive.objects import retrying
from segwal.archive.state import write_atomic
from segwal.archive.store import ObjectStore
from segwal.errors import (
    ArchiveConflictError,
    ArchiveCorruptError,
    ArchiveNotFoundError,
    CorruptionError,
    UnsupportedFormatError,
)
from segwal.format import dictionary as layout
from segwal.log.sidefiles import FileSystem, OsFileSystem, read_small

DICTS_PREFIX: Final = "dicts/"


def dict_key(name: str) -> str:
    """The object key of the dictionary file ``name`` (``{digest hex}.zdict``)."""
    return DICTS_PREFIX + name


def check(data: bytes, *, key: str, url: str) -> layout.Dictionary:
    """The dictionary a ``dicts/`` object holds: whole, and its digest its name's.
    ArchiveCorruptError otherwise."""
    try:
        return layout.decode(data, key)  # checks the name in the key against the digest
    except (CorruptionError, UnsupportedFormatError) as exc:
        raise ArchiveCorruptError(f"not a dictionary file: {exc}", url=url, key=key) from None


def read_local(directory: str, dict_id: int, fs: FileSystem | None = None) -> bytes:
    """The bytes of the log's dictionary file with this id (through ``fs``, the log's file
    system); CorruptionError when there is none, or two."""
    fs = fs or OsFileSystem()
    prefix = layout.id_prefix(dict_id)
    names = [
        e.name
        for e in fs.list_dir(directory)
        if e.name.startswith(prefix) and layout.parse_name(e.name) is not None
    ]
    if len(names) != 1:
        raise CorruptionError(
            f"{len(names)} dictionary files with id {dict_id:#010x} (need exactly one)",
            path=directory,
        )
    path = posixpath.join(directory, names[0])
    data = read_small(fs, path, layout.MAX_FILE)
    if data is None:
        raise CorruptionError(f"dictionary {names[0]} is gone", path=path)
    layout.decode(data, path)
    return data


def upload(store: ObjectStore, data: bytes) -> str:
    """Create the ``dicts/`` object for ``data`` (a dictionary file) unless it is there;
    its key."""
    dictionary = layout.decode(data, "upload")
    key = dict_key(dictionary.name)
    metadata = {"digest": dictionary.digest.hex(), "dict-id": f"{dictionary.dict_id:08x}"}
    if not store.put_if_absent(key, data, metadata) and store.get(key) != data:
        raise ArchiveConflictError(  # only a tampered store: the name is the digest
            "another dictionary is stored under this dictionary's digest",
            url=store.url,
            key=key,
        )
    return key


def fetch(
    store: ObjectStore, dict_id: int, *, where: str, attempts: int = 6, base_delay: float = 0.2
) -> bytes:
    """The checked bytes of the archive's dictionary with this id; ArchiveNotFoundError when
    there is none, ArchiveCorruptError for a damaged one or two under one id."""
    prefix = DICTS_PREFIX + layout.id_prefix(dict_id)
    infos = retrying(lambda: list(store.list(prefix)), attempts=attempts, base_delay=base_delay)
    keys = [i.key for i in infos if layout.parse_name(i.key[len(DICTS_PREFIX) :]) is not None]
    if not keys:
        raise ArchiveNotFoundError(
            f"{where} names compression dictionary {dict_id:#010x}, which the archive lacks",
            url=store.url,
            key=prefix,
        )
    if len(keys) > 1:
        raise ArchiveCorruptError(
            f"two dictionaries share id {dict_id:#010x}: {sorted(keys)}", url=store.url, key=prefix
        )
    data = retrying(lambda: store.get(keys[0]), attempts=attempts, base_delay=base_delay)
    check(data, key=keys[0], url=store.url)
    return data


def present(directory: str, dict_id: int) -> bool:
    """Whether the directory has a dictionary file with this id (its bytes are checked by
    whoever reads it)."""
    prefix = layout.id_prefix(dict_id)
    return any(
        n.startswith(prefix) and layout.parse_name(n) is not None for n in os.listdir(directory)
    )


def install(directory: str, data: bytes) -> None:
    """Write ``data`` as the directory's dictionary file, durably (temp file, fsync, rename,
    directory fsync), before any segment that names it is written; nothing when it is
    there already."""
    name = layout.decode(data, "install").name
    if os.path.exists(os.path.join(directory, name)):
        return  # content-addressed: the same name holds the same bytes (verify checks)
    write_atomic(directory, name, data, temp_name=name + ".tmp")


def problems(store: ObjectStore, needed: dict[int, str]) -> list[tuple[str, str]]:
    """(key, reason) for each dictionary a segment names (``needed``: id -> the first
    segment naming it) that the archive lacks or holds damaged, each damaged one, and each
    that shares its id with another (a reader cannot tell which one a segment names)."""
    found: list[tuple[str, str]] = []
    seen: dict[int, str] = {}  # id -> the first intact object with it
    for info in retrying(lambda: list(store.list(DICTS_PREFIX)), attempts=6, base_delay=0.2):
        try:
            dictionary = check(store.get(info.key), key=info.key, url=store.url)
        except ArchiveCorruptError as exc:
            found.append((info.key, exc.reason))
            continue
        first = seen.setdefault(dictionary.dict_id, info.key)
        if first != info.key:
            # A restore refuses to pick one (fetch): a segment naming this id is unreadable.
            found.append(
                (info.key, f"shares dictionary id {dictionary.dict_id:#010x} with {first}")
            )
    for dict_id, segment in sorted(needed.items()):
        if dict_id not in seen:
            found.append((segment, f"names compression dictionary {dict_id:#010x}, not archived"))
    return found
