"""A log's compression dictionaries while no writer has it open: training one from records,
listing them with the segments that name them, and pruning those no segment names.

When a dictionary may go: only ``prune_dictionaries`` deletes one, under the writer lock (so
no writer can be creating a segment that names it), and only when no segment of the log names
its id, no quarantined piece does (recovery's evidence keeps what decodes it), and it is not
the dictionary ``keep`` names (the one the next writer will be opened with). Retention,
``truncate_before``, ``truncate_after`` and every maintenance command delete segments only,
so a dictionary outlives the last segment that names it until it is pruned.
"""

from __future__ import annotations

import errno
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from segwal.errors import LockError, SegwalError, StorageError
from segwal.format import dictionary as layout
from segwal.format.naming import LOCK_NAME, Kind, parse
from segwal.storage import dictionaries
from segwal.storage.fileio import FileSystem
from segwal.storage.segment import read_header


@dataclass(frozen=True, slots=True, kw_only=True)
class DictionaryInfo:
    """One dictionary file of a log: its id (as segment headers name it), digest, size and
    the segments that name it."""

    dict_id: int
    digest: str
    size: int
    path: str
    segments: tuple[str, ...]


def referencing(fs: FileSystem, directory: str) -> dict[int, list[str]]:
    """Dictionary id -> the segment files (and quarantined pieces) whose header names it.
    A segment whose header cannot be read raises (its dictionary cannot be known); a
    quarantined piece without a header is skipped (it names nothing)."""
    found: dict[int, list[str]] = {}
    for entry in sorted(fs.list_dir(directory), key=lambda e: e.name):
        kind = parse(entry.name).kind
        if kind not in (Kind.SEGMENT, Kind.QUARANTINE) or not entry.is_file:
            continue
        path = posixpath.join(directory, entry.name)
        try:
            handle = fs.open_read(path)
        except StorageError as exc:
            if exc.errno == errno.ENOENT:
                continue  # deleted since the listing (retention of a live writer)
            raise
        try:
            header = read_header(handle)
        except SegwalError:
            if kind is Kind.SEGMENT:
                raise
            continue
        finally:
            handle.close()
        if header.dict_id:
            found.setdefault(header.dict_id, []).append(path)
    return found


def list_dictionaries(fs: FileSystem, directory: str) -> tuple[DictionaryInfo, ...]:
    """The dictionary files of the log, each checked whole, with the segments naming it."""
    users = referencing(fs, directory)
    infos = []
    for dict_id, names in sorted(dictionaries.listed(fs, directory).items()):
        for name in sorted(names):
            path = posixpath.join(directory, name)
            stored = dictionaries.load_file(fs, path)
            if stored is None:
                continue  # pruned between the listing and the read
            infos.append(
                DictionaryInfo(
                    dict_id=dict_id,
                    digest=stored.digest.hex(),
                    size=len(stored.content),
                    path=path,
                    segments=tuple(users.get(dict_id, ())),
                )
            )
    return tuple(infos)


def prune_dictionaries(
    fs: FileSystem, directory: str, *, keep: Iterable[bytes] = (), dry_run: bool = False
) -> tuple[str, ...]:
    """Delete (or, with ``dry_run``, name) the dictionary files no segment names; ``keep``:
    dictionary contents (or their ``.zdict`` bytes) to keep anyway. LockError while a writer
    has the log open."""
    kept = {layout.make(_content(k)).dict_id for k in keep}
    handle = fs.lock(posixpath.join(directory, LOCK_NAME), exclusive=True)
    if handle is None:
        raise LockError(directory, None)
    try:
        referenced = set(referencing(fs, directory)) | kept
        if dry_run:
            return tuple(
                posixpath.join(directory, name)
                for dict_id, names in sorted(dictionaries.listed(fs, directory).items())
                if dict_id not in referenced
                for name in names
            )
        return tuple(dictionaries.prune(fs, directory, referenced))
    finally:
        handle.close()


def _content(data: bytes) -> bytes:
    if data[: len(layout.MAGIC)] == layout.MAGIC:
        return layout.decode(data, "keep").content
    return data
