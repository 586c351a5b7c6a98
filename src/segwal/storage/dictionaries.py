"""The log's compression dictionary files: adding one durably, finding one by id, checking.

A dictionary file (``format.dictionary``) is written once, through ``storage.replace`` (temp
file, fdatasync, rename, directory fsync), and made durable **before** any segment header
names its id: a crash between the two leaves a dictionary no segment names (harmless, removed
by ``prune``), never a segment whose frames nothing can decompress. It is never rewritten:
its name is the digest of its content.

Never deleted while referenced: retention, ``truncate_before`` and the maintenance commands
delete segments only; ``prune`` (``Wal.prune_dictionaries``, ``segwal dict prune``) deletes
a dictionary file only when no segment of the log names its id and the open writer does not
use it, under the writer lock.
"""

from __future__ import annotations

import errno
import posixpath
import threading
from collections.abc import Iterable

from segwal.errors import (
    ConfigError,
    CorruptionError,
    MissingDictionaryError,
    StorageError,
    UnsupportedFormatError,
)
from segwal.format import dictionary as layout
from segwal.format.codecs import decoding_dictionary
from segwal.format.dictionary import Dictionary
from segwal.storage.fileio import FileSystem
from segwal.storage.forklocks import LEAF, guard
from segwal.storage.replace import read_file, replace_file
from segwal.types import Problem


def listed(fs: FileSystem, directory: str) -> dict[int, list[str]]:
    """The dictionary file names of ``directory``, by id (two names under one id: refused
    wherever that id is needed)."""
    found: dict[int, list[str]] = {}
    for entry in fs.list_dir(directory):
        digest = layout.parse_name(entry.name)
        if digest is not None:
            found.setdefault(layout.id_of(digest), []).append(entry.name)
    return found


def load_file(fs: FileSystem, path: str) -> Dictionary | None:
    """The dictionary stored at ``path`` (None when there is no such file), checked whole."""
    raw = read_file(fs, path, layout.MAX_FILE)
    return None if raw is None else layout.decode(raw, path)


def add(fs: FileSystem, directory: str, dictionary: Dictionary) -> None:
    """Store ``dictionary`` in the log, durably, unless the same one is there already.

    ConfigError when another dictionary of the log has the same id (the ids are 4 bytes of
    the digests: the second of two colliding dictionaries cannot be named, so train again).
    """
    path = posixpath.join(directory, dictionary.name)
    for name in listed(fs, directory).get(dictionary.dict_id, []):
        if name != dictionary.name:
            raise ConfigError(
                f"dictionary id {dictionary.dict_id:#010x} is taken by {name} in {directory}: "
                "train another dictionary",
                option="compression_dictionary",
            )
    try:
        existing = load_file(fs, path)
    except CorruptionError:
        existing = None  # a damaged copy of the same content: written again below
    if existing is not None:
        return
    replace_file(
        fs,
        path,
        layout.encode(dictionary),
        temp=path + ".tmp",
        sync=lambda handle: handle.sync("dictionary.sync"),
        # The name must be durable before a segment header names the id, or a power loss
        # could leave segments whose frames no dictionary decodes.
        sync_dir=lambda: fs.sync_dir(directory, "dictionary.rename"),
    )


class Dictionaries:
    """The dictionaries of one log directory, read when a segment first needs one and kept
    (each prepared once for decoding); thread-safe, shared by the writer and readers."""

    def __init__(self, fs: FileSystem, directory: str) -> None:
        self._fs = fs
        self._directory = directory
        self._lock = guard(threading.Lock(), LEAF)
        self._decoding: dict[int, object] = {}

    def find(self, dict_id: int, needed_by: str) -> Dictionary:
        """The dictionary with this id; MissingDictionaryError (naming the segment that
        needs it) when the log has none, CorruptionError (naming the file) when it is
        damaged or two files share the id."""
        names = listed(self._fs, self._directory).get(dict_id, [])
        if not names:
            raise MissingDictionaryError(
                f"compression dictionary {dict_id:#010x} ({layout.id_prefix(dict_id)}"
                f"...{layout.SUFFIX}) is missing from the log directory",
                path=needed_by,
                offset=116,
            )
        if len(names) > 1:
            raise CorruptionError(
                f"two dictionary files share id {dict_id:#010x}: {sorted(names)}",
                path=posixpath.join(self._directory, names[0]),
            )
        path = posixpath.join(self._directory, names[0])
        found = load_file(self._fs, path)
        if found is None:  # deleted between the listing and the read
            raise MissingDictionaryError(
                f"compression dictionary {dict_id:#010x} is missing", path=needed_by, offset=116
            )
        return found

    def for_decoding(self, dict_id: int, needed_by: str) -> object:
        """The dictionary ready for ``codecs.decompress`` (read and checked once)."""
        with self._lock:
            found = self._decoding.get(dict_id)
        if found is None:
            found = decoding_dictionary(self.find(dict_id, needed_by).content, needed_by)
            with self._lock:
                self._decoding[dict_id] = found
        return found


def check(fs: FileSystem, directory: str) -> list[Problem]:
    """What ``verify`` says of the dictionary files: each whole, matching its digest and
    name, and no two under one id; a dictionary no segment names is checked too (damage is
    damage). A missing one is reported by the segments that name it (their frames do not
    decode)."""
    problems: list[Problem] = []
    try:
        names = listed(fs, directory)
    except StorageError as exc:
        return [Problem(path=directory, offset=None, lsn=None, reason=str(exc))]
    for dict_id, files in sorted(names.items()):
        if len(files) > 1:
            reason = f"dictionary files {sorted(files)} share id {dict_id:#010x}"
            problems.append(Problem(path=directory, offset=None, lsn=None, reason=reason))
        for name in files:
            path = posixpath.join(directory, name)
            try:
                load_file(fs, path)
            except CorruptionError as exc:
                problems.append(Problem(path=path, offset=exc.offset, lsn=None, reason=exc.reason))
            except UnsupportedFormatError as exc:
                problems.append(
                    Problem(path=path, offset=0, lsn=None, reason=str(exc), kind="unsupported")
                )
            except StorageError as exc:
                problems.append(Problem(path=path, offset=None, lsn=None, reason=str(exc)))
    return problems


def prune(fs: FileSystem, directory: str, referenced: Iterable[int]) -> list[str]:
    """Delete the dictionary files whose id is not in ``referenced`` (the ids the log's
    segments name plus the writer's own); the caller holds the writer lock. Returns the
    paths deleted."""
    keep = set(referenced)
    removed = []
    for dict_id, names in sorted(listed(fs, directory).items()):
        if dict_id in keep:
            continue
        for name in names:
            path = posixpath.join(directory, name)
            try:
                fs.unlink(path)
            except StorageError as exc:
                if exc.errno != errno.ENOENT:
                    raise
            removed.append(path)
    if removed:
        fs.sync_dir(directory, "dictionary.prune")
    return removed
