"""The archiver's small state file in the log directory, ``ARCHIVE.state``.

The archived LSN itself lives in META, as the ``archive`` hold (written by the log's own
atomic META replace), so it and the hold that keeps unarchived segments can never disagree.
This file holds what META has no field for: the URL, the current generation (or the
parent and fork LSN of the one the next upload starts), the highest LSN ever put in flight
in this generation (a PUT whose answer was lost counts: its bytes may be in the store), and
the log's rewind count when this was last written, so a ``truncate_after`` run while the
archiver was not running is noticed at the next open, and, for an encrypted log, the digest
of the ``KEYS`` last uploaded (a rewrap or a new log key changes it, and is uploaded).

Replaced whole: temp file, fsync, rename, fsync of the directory (a crash leaves the old
file or the new one). Written before every PUT that raises ``in_flight``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Final

from segwal.errors import CorruptionError
from segwal.format import naming

STATE_NAME: Final = naming.ARCHIVE_STATE_NAME
MAX_STATE_BYTES: Final = 1 << 16


@dataclass(slots=True, kw_only=True)
class UploadState:
    url: str
    generation: str | None  # None: the next upload starts a new generation
    parent: str | None  # the parent of the generation (to be) started
    fork_lsn: int  # LSNs up to here come from the parent
    in_flight: int  # the highest LSN ever sent to this generation (or fork_lsn)
    rewinds: int  # the log's rewind count when this was written
    keys: str | None = None  # digest of the KEYS last uploaded (``keys/<digest>.keys``)


def load_state(directory: str) -> UploadState | None:
    path = os.path.join(directory, STATE_NAME)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    try:
        body = json.loads(raw)
        state = UploadState(**body)
        if (
            not isinstance(state.url, str)
            or type(state.in_flight) is not int
            or not isinstance(state.keys, str | None)
        ):
            raise TypeError("fields")
    except (ValueError, TypeError):
        raise CorruptionError(f"{STATE_NAME} is unreadable", path=path, offset=0) from None
    return state


def store_state(directory: str, state: UploadState) -> None:
    write_atomic(directory, STATE_NAME, json.dumps(asdict(state), sort_keys=True).encode())


def write_atomic(directory: str, name: str, data: bytes, *, temp_name: str | None = None) -> None:
    """Replace ``directory/name`` durably: the data is fsynced before the rename (so the
    new name never points at unwritten bytes), the directory after it (so the rename
    survives a power loss). The temp file is ``{name}.{pid}.tmp`` (``format.naming`` knows
    it) unless ``temp_name`` is given."""
    path = os.path.join(directory, name)
    temp = os.path.join(directory, temp_name) if temp_name else f"{path}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    sync_dir(directory)


def sync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
