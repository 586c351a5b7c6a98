"""Object names, metadata and checks of the archive layout (``docs/ARCHIVE.md``).

Under a store's prefix::

    ARCHIVE                        {"format": "segwal-archive/1", "log_id": hex}, created once
    g/<generation>/GEN             {"parent", "fork_lsn", "host", "created_us"}, created once
    g/<generation>/seg/<first:020d>.wal   a sealed segment, byte for byte, created once
    keys/<blake3 hex>.keys         an encrypted log's KEYS, byte for byte (archive/keyobjects.py)
    dicts/<blake3 hex>.zdict       a compression dictionary file, byte for byte (dictobjects.py)

A generation's name is 16 hex digits of its creation time in microseconds and 8 random
ones, so names sort oldest first. A segment's name carries only its first LSN: two
different segments for one position collide on the conditional create and are caught.
Its metadata says its last LSN, size, digest and timestamps; every read checks them and
the seal. A generation holds its own segments above ``fork_lsn`` and takes the LSNs up to
``fork_lsn`` from its parent, so a rewind or a restore never renames history.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

import blake3

from segwal.errors import ArchiveCorruptError, ArchiveUnavailableError
from segwal.format.layout import (
    HEADER_SIZE,
    SEAL_SIZE,
    FormatError,
    SegmentHeader,
    decode_header,
    decode_seal,
)

FORMAT: Final = "segwal-archive/1"
ARCHIVE_KEY: Final = "ARCHIVE"
GENERATIONS: Final = "g/"
_GENERATION = re.compile(r"[0-9a-f]{24}", re.ASCII)
_SEGMENT_KEY = re.compile(r"g/([0-9a-f]{24})/seg/(\d{20})\.wal", re.ASCII)
_GEN_KEY = re.compile(r"g/([0-9a-f]{24})/GEN", re.ASCII)
T = TypeVar("T")


def new_generation() -> str:
    return f"{time.time_ns() // 1000:016x}{secrets.token_hex(4)}"


def check_generation(name: str) -> str:
    if not _GENERATION.fullmatch(name):
        raise ValueError(f"not a generation name: {name!r} (24 hex digits)")
    return name


def gen_key(generation: str) -> str:
    return f"{GENERATIONS}{generation}/GEN"


def seg_prefix(generation: str) -> str:
    return f"{GENERATIONS}{generation}/seg/"


def segment_key(generation: str, first_lsn: int) -> str:
    return f"{seg_prefix(generation)}{first_lsn:020d}.wal"


def parse_segment_key(key: str) -> tuple[str, int] | None:
    """(generation, first LSN) of a segment key, or None for any other key."""
    found = _SEGMENT_KEY.fullmatch(key)
    return None if found is None else (found[1], int(found[2]))


def parse_gen_key(key: str) -> str | None:
    found = _GEN_KEY.fullmatch(key)
    return None if found is None else found[1]


def archive_body(log_id: bytes) -> bytes:
    return json.dumps({"format": FORMAT, "log_id": log_id.hex()}, sort_keys=True).encode()


def gen_body(parent: str | None, fork_lsn: int) -> bytes:
    body = {
        "parent": parent,
        "fork_lsn": fork_lsn,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "created_us": time.time_ns() // 1000,
    }
    return json.dumps(body, sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class Generation:
    name: str
    parent: str | None
    fork_lsn: int


def parse_gen(name: str, data: bytes, url: str) -> Generation:
    try:
        raw = json.loads(data)
        parent = raw["parent"]
        fork = raw["fork_lsn"]
        if parent is not None:
            check_generation(parent)
        if type(fork) is not int or fork < 0:
            raise ValueError("fork_lsn")
    except (ValueError, KeyError, TypeError):
        raise ArchiveCorruptError(
            "unreadable generation record", url=url, key=gen_key(name)
        ) from None
    return Generation(name=name, parent=parent, fork_lsn=fork)


def parse_archive(data: bytes, url: str) -> bytes:
    """The log id an ``ARCHIVE`` object names."""
    try:
        raw = json.loads(data)
        if raw["format"] != FORMAT:
            raise ValueError(raw["format"])
        return bytes.fromhex(raw["log_id"])
    except (ValueError, KeyError, TypeError):
        raise ArchiveCorruptError(
            f"ARCHIVE is not a {FORMAT} record", url=url, key=ARCHIVE_KEY
        ) from None


@dataclass(frozen=True, slots=True)
class SegmentFacts:
    """What a verified segment's bytes say about it."""

    header: SegmentHeader
    first_lsn: int
    last_lsn: int
    size: int
    digest: bytes
    min_ts: int
    max_ts: int


def digest_of(data: bytes | memoryview) -> bytes:
    return blake3.blake3(data).digest()


def check_segment(data: bytes, *, key: str, url: str, first_lsn: int | None = None) -> SegmentFacts:
    """Check a whole sealed segment's bytes: header, seal, and the digest over the data.

    Raises ArchiveCorruptError naming the object, the LSN range and the reason."""

    def bad(reason: str, last: int | None = None) -> ArchiveCorruptError:
        first = first_lsn
        return ArchiveCorruptError(
            reason, url=url, key=key, first_lsn=first, last_lsn=last if last else first
        )

    if len(data) < HEADER_SIZE + SEAL_SIZE:
        raise bad(f"{len(data)} bytes is too short for a sealed segment")
    try:
        header = decode_header(data[:HEADER_SIZE])
        seal = decode_seal(data[-SEAL_SIZE:], header.seed)
    except FormatError as exc:
        raise bad(exc.reason) from None
    if first_lsn is not None and header.first_lsn != first_lsn:
        raise bad(f"the segment starts at LSN {header.first_lsn}, its name says {first_lsn}")
    if seal.first_lsn != header.first_lsn or seal.data_end != len(data) - SEAL_SIZE:
        raise bad(
            f"the seal says LSNs {seal.first_lsn}..{seal.last_lsn} ending at {seal.data_end}, "
            f"the object holds {len(data)} bytes",
            seal.last_lsn,
        )
    if digest_of(memoryview(data)[: seal.data_end]) != seal.digest:
        raise bad("the digest of the bytes does not match the seal", seal.last_lsn)
    return SegmentFacts(
        header=header,
        first_lsn=header.first_lsn,
        last_lsn=seal.last_lsn,
        size=len(data),
        digest=seal.digest,
        min_ts=seal.min_ts,
        max_ts=seal.max_ts,
    )


def metadata_of(facts: SegmentFacts) -> dict[str, str]:
    return {
        "last-lsn": str(facts.last_lsn),
        "size": str(facts.size),
        "digest": facts.digest.hex(),
        "min-ts": str(facts.min_ts),
        "max-ts": str(facts.max_ts),
    }


def metadata_problem(facts: SegmentFacts, metadata: Mapping[str, str]) -> str | None:
    """Why an object's metadata disagrees with its verified bytes (absent fields pass)."""
    expected = metadata_of(facts)
    for name in ("last-lsn", "size", "digest"):
        value = metadata.get(name)
        if value is not None and value != expected[name]:
            return f"metadata {name} is {value}, the bytes say {expected[name]}"
    return None


def chain_problem(prev: SegmentFacts, nxt: SegmentFacts) -> str | None:
    """Why ``nxt`` cannot follow ``prev`` in one log, if it cannot."""
    if nxt.header.log_id != prev.header.log_id:
        return "the segment belongs to another log (log id)"
    if nxt.first_lsn > prev.last_lsn + 1:
        return f"gap: LSNs {prev.last_lsn + 1}..{nxt.first_lsn - 1} are missing"
    if nxt.first_lsn <= prev.last_lsn:
        return f"overlap with LSNs {nxt.first_lsn}..{prev.last_lsn} of the previous segment"
    if nxt.header.prev_digest != prev.digest:
        return "broken chain: the previous digest it names is not the previous segment's"
    return None


def retrying(
    call: Callable[[], T],
    *,
    attempts: int,
    base_delay: float,
    on_retry: Callable[[ArchiveUnavailableError], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
    max_delay: float = 30.0,
) -> T:
    """``call()``, retried with exponential backoff on ArchiveUnavailableError only."""
    delay = base_delay
    for attempt in range(attempts):
        try:
            return call()
        except ArchiveUnavailableError as exc:
            if attempt + 1 >= attempts or stop():
                raise
            if on_retry is not None:
                on_retry(exc)
            time.sleep(delay * (0.5 + secrets.randbelow(1000) / 1000))
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")
