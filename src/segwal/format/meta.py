"""The ``META`` file's bytes: the checkpoint, holds, an unfinished rewind, the rewind count,
and how far a clean close left the active segment durable. Pure: ``storage.meta`` reads and
writes it.

Layout (little-endian)::

    0   8  magic      b"SWMETA01"
    8   4  length     of the JSON body
    12  4  CRC32C     of the JSON body
    16  n  body       UTF-8 JSON object:
                        "first_lsn": int                  the checkpoint
                        "holds": {name: lsn}
                        "truncate_after": int | null      a rewind being carried out
                        "rewinds": int                    (optional) truncate_after calls ever
                        "rewound_to": [[count, lsn], ...] (optional) the last 64 rewinds
                        "closed": [segment, end, lsn]     (optional) a clean close's tail
                        "closed_tail": [token, min_ts, max_ts]
                                                          (optional, with "closed") what the
                                                          open scan would find there besides

The optional keys are written only when they say something, so a log that never rewound
and is open has the bytes it always had; a reader that does not know a key ignores it.
``closed_tail`` is a key of its own, not more items in ``closed``, because older versions
reject a ``closed`` that is not a triple but ignore a key they do not know (and drop it when
they write META, which leaves the open to scan).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field, replace
from typing import Final

from segwal.errors import ConfigError, CorruptionError
from segwal.format.layout import HEADER_SIZE, MAX_LSN, crc32c
from segwal.format.naming import Kind, parse

MAGIC: Final = b"SWMETA01"
HEAD = struct.Struct("<8sII")
MAX_BODY: Final = 16 << 20
MAX_OFFSET: Final = 1 << 62
REWIND_HISTORY: Final = 64  # rewinds remembered for readers and cursors that fell behind
HOLD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Closed:
    """A clean close: the active segment ``segment`` was durable up to ``end`` (LSN ``lsn``).

    Damage before ``end`` in that segment, while it is the last one, is then bit rot
    (corruption), never a torn write: no crash can tear what a clean close made durable.
    """

    segment: str
    end: int
    lsn: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TailFacts:
    """What a clean close knew of the segment ``Closed`` names, beyond its end and last LSN:
    its time range, and ``token``, a digest of the close's facts (storage/tail.py), which
    its index sidecar carries so that the open takes only a sidecar written for this close
    (storage/index.py)."""

    token: bytes
    min_ts: int
    max_ts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Meta:
    """What the log keeps beside its segments."""

    first_lsn: int = 1
    holds: dict[str, int] = field(default_factory=dict)
    truncate_after: int | None = None  # set while a truncate_after is being carried out
    rewinds: int = 0  # truncate_after calls over the log's life
    rewound_to: tuple[tuple[int, int], ...] = ()  # (rewind count, LSN it went back to)
    closed: Closed | None = None  # set by a clean close; cleared by a rewind or a cut
    tail: TailFacts | None = None  # set with ``closed`` by a clean close, meaningless alone

    def with_(self, **changes: object) -> Meta:
        return replace(self, **changes)  # type: ignore[arg-type]

    def rewound(self, lsn: int) -> Meta:
        """This META with one more rewind, to ``lsn``, remembered."""
        count = self.rewinds + 1
        history = (*self.rewound_to, (count, lsn))[-REWIND_HISTORY:]
        return replace(self, rewinds=count, rewound_to=history, closed=None, tail=None)


def check_hold_name(name: object) -> str:
    """A hold or cursor name: 1-128 characters of letters, digits and ``._:@-``."""
    if not isinstance(name, str) or not HOLD_NAME.match(name):
        raise ConfigError(
            f"invalid hold name {name!r}: use 1-128 letters, digits or ._:@- "
            "(starting with a letter or digit)",
            option="name",
        )
    return name


def encode(meta: Meta) -> bytes:
    body: dict[str, object] = {
        "first_lsn": meta.first_lsn,
        "holds": meta.holds,
        "truncate_after": meta.truncate_after,
    }
    if meta.rewinds:
        body["rewinds"] = meta.rewinds
        body["rewound_to"] = [list(pair) for pair in meta.rewound_to]
    if meta.closed is not None:
        body["closed"] = [meta.closed.segment, meta.closed.end, meta.closed.lsn]
        if meta.tail is not None:
            tail = meta.tail
            body["closed_tail"] = [tail.token.hex(), tail.min_ts, tail.max_ts]
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return HEAD.pack(MAGIC, len(raw), crc32c(raw)) + raw


def decode(data: bytes, path: str) -> Meta:
    def bad(reason: str) -> CorruptionError:
        return CorruptionError(f"META file: {reason}", path=path, offset=0)

    if len(data) < HEAD.size:
        raise bad("too short")
    magic, length, crc = HEAD.unpack_from(data)
    if magic != MAGIC:
        raise bad("bad magic")
    if length > MAX_BODY or HEAD.size + length != len(data):
        raise bad(f"length {length} disagrees with the file size {len(data)}")
    body = data[HEAD.size :]
    if crc32c(body) != crc:
        raise bad("checksum mismatch")
    try:
        raw = json.loads(body)
    except ValueError:  # not UTF-8, not JSON, or an integer too long to convert
        raise bad("unreadable body") from None
    problem = _field_problem(raw)
    if problem is not None:
        # A checksum only says the bytes are the ones written; a hand edit or a bug can
        # write a valid checksum over values that would make recovery delete segments.
        raise bad(problem)
    closed = raw.get("closed")
    tail = raw.get("closed_tail")
    return Meta(
        first_lsn=raw["first_lsn"],
        holds=dict(raw["holds"]),
        truncate_after=raw["truncate_after"],
        rewinds=raw.get("rewinds", 0),
        rewound_to=tuple((c, n) for c, n in raw.get("rewound_to", ())),
        closed=None if closed is None else Closed(segment=closed[0], end=closed[1], lsn=closed[2]),
        tail=None
        if tail is None
        else TailFacts(token=bytes.fromhex(tail[0]), min_ts=tail[1], max_ts=tail[2]),
    )


def _is_lsn(value: object, low: int, high: int) -> bool:
    # bool is an int subclass: true and false are not LSNs.
    return type(value) is int and low <= value <= high


def _field_problem(raw: object) -> str | None:
    """Why a decoded META body is not one segwal could have written, if it is not."""
    if not isinstance(raw, dict):
        return "body is not a JSON object"
    missing = [key for key in ("first_lsn", "holds", "truncate_after") if key not in raw]
    if missing:
        return f"body lacks {', '.join(missing)}"
    first, holds, after = raw["first_lsn"], raw["holds"], raw["truncate_after"]
    if not _is_lsn(first, 1, MAX_LSN + 1):
        return f"first_lsn {first!r} is not an LSN between 1 and {MAX_LSN + 1}"
    if not isinstance(holds, dict):
        return f"holds {holds!r} is not an object"
    for name, lsn in holds.items():
        if not HOLD_NAME.match(name):
            return f"hold name {name!r} is not a valid name"
        if not _is_lsn(lsn, 1, MAX_LSN + 1):
            return f"hold {name!r} at {lsn!r} is not an LSN between 1 and {MAX_LSN + 1}"
    if after is not None and not _is_lsn(after, first - 1, MAX_LSN):
        return (
            f"truncate_after {after!r} is neither null nor an LSN between {first - 1} "
            f"(first_lsn - 1) and {MAX_LSN}"
        )
    return (
        _rewind_problem(raw)
        or _closed_problem(raw.get("closed"))
        or _tail_problem(raw.get("closed_tail"), raw.get("closed"))
    )


def _rewind_problem(raw: dict[str, object]) -> str | None:
    rewinds = raw.get("rewinds", 0)
    if not _is_lsn(rewinds, 0, MAX_LSN):
        return f"rewinds {rewinds!r} is not a count"
    history = raw.get("rewound_to", [])
    if not isinstance(history, list) or len(history) > REWIND_HISTORY:
        return f"rewound_to is not a list of at most {REWIND_HISTORY} pairs"
    previous = 0
    for pair in history:
        if not (isinstance(pair, list) and len(pair) == 2):
            return f"rewound_to entry {pair!r} is not a [count, lsn] pair"
        count, lsn = pair
        if not _is_lsn(count, previous + 1, rewinds) or not _is_lsn(lsn, 0, MAX_LSN):  # type: ignore[arg-type]
            return f"rewound_to entry {pair!r} is out of order or range"
        previous = count
    return None


def _closed_problem(closed: object) -> str | None:
    if closed is None:
        return None
    if not (isinstance(closed, list) and len(closed) == 3):
        return f"closed {closed!r} is not a [segment, end, lsn] triple"
    segment, end, lsn = closed
    if not isinstance(segment, str) or parse(segment).kind is not Kind.SEGMENT:
        return f"closed names {segment!r}, not a segment file"
    if not _is_lsn(end, HEADER_SIZE, MAX_OFFSET) or not _is_lsn(lsn, 0, MAX_LSN):
        return f"closed {closed!r} has an offset or LSN out of range"
    return None


TOKEN_BYTES: Final = 16
MAX_TS: Final = (1 << 64) - 1
_HEX = re.compile(r"^[0-9a-f]+$")


def _tail_problem(tail: object, closed: object) -> str | None:
    if tail is None:
        return None
    if closed is None:
        return "closed_tail without closed"
    if not (isinstance(tail, list) and len(tail) == 3):
        return f"closed_tail {tail!r} is not a [token, min_ts, max_ts] triple"
    token, low, high = tail
    if not (isinstance(token, str) and len(token) == 2 * TOKEN_BYTES and _HEX.match(token)):
        return f"closed_tail token {token!r} is not {TOKEN_BYTES} bytes in hex"
    if not _is_lsn(low, 0, MAX_TS) or not _is_lsn(high, 0, MAX_TS):
        return f"closed_tail {tail!r} has a timestamp out of range"
    return None
