"""The LOCK file's bytes: the writer's pid and what it publishes to readers. Pure:
``storage.lockfile`` takes the lock and reads and writes these bytes.

Layout (little-endian)::

    0   8  magic       b"SWLOCK01"
    8   8  pid         u64, 0 when the log was closed cleanly
    16  8  durable     u64, the durable LSN
    24  8  check       u64, the bitwise complement of durable (a torn read shows)
    32  8  rewinds     u64, the log's rewind count            (since segwal 0.2)
    40  8  check       u64, the bitwise complement of rewinds (since segwal 0.2)
    48 48  counters    6 x u64 since the writer opened the log (since segwal 0.2):
                       appends, records, payload bytes, written bytes, fsyncs, dir fsyncs
    96  4  check       u32, CRC-32C of the counters
    100 8  generation  u64, bumped when a writer opens the log and at every change readers
                       see that moves no LSN (since segwal 0.3); never 0
    108 8  check       u64, the bitwise complement of generation
    116 4  padding     zero
    120 8  sequence    u64, even; odd while the writer stores the bytes above through its
                       shared mapping of the file, a seqlock (since segwal 0.4)

The first 32 bytes keep their meaning; a reader of only those ignores the rest. The file is
never fsynced: it tells live readers in other processes how far the log is durable;
recovery never reads it.

The writer rewrites the whole file whenever what readers see may have changed (the durable
LSN, a rewind, META replaced: a checkpoint, retention, holds), and each such rewrite differs
from the one before: the durable LSN or the rewind count moved, or the generation. A writer
continues the generation it finds in LOCK (within one boot LOCK's content survives every
writer; readers do not survive a machine crash), so two writers' sessions never publish the
same bytes. A readonly reader whose view was planned from the directory after it read bytes
B may therefore keep that view while LOCK still holds B, if B has a generation.

Since 0.4 the writer maps the file's first ``MAPPED_SIZE`` bytes shared and publishes by
storing into the mapping (no system call): the sequence word at 120 turns odd, the first
116 bytes are stored, it turns even again, larger. Readers that map the file read the
sequence, the bytes, the sequence again and keep the copy when both reads agree and are
even; readers that ``pread`` (older versions, or a file system without mappings) see the
same bytes as before, torn reads shown by the complements as before.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from segwal.format.layout import crc32c

LAYOUT = struct.Struct("<8sQQQ")
EXTENSION = struct.Struct("<QQ")
COUNTERS = struct.Struct("<6Q")
COUNTERS_CRC = struct.Struct("<I")
GENERATION = struct.Struct("<QQ")
MAGIC: Final = b"SWLOCK01"
GENERATION_OFFSET: Final = LAYOUT.size + EXTENSION.size + COUNTERS.size + COUNTERS_CRC.size
SIZE: Final = GENERATION_OFFSET + GENERATION.size
_HEAD = struct.Struct("<8sQQQQQ6Q")  # the fields before the counters' CRC, in one pack
_TAIL = struct.Struct("<IQQ")  # the counters' CRC, the generation and its complement
# The same bytes with each complement given as ``~value``, a signed word of the same bits:
# a small negative int converts faster than an unsigned one of 2**63 or more (callgrind:
# 2.5k fewer instructions per durable append), and this pack runs once per fdatasync.
# Values past the signed range take the masked pack.
_HEAD_SIGNED = struct.Struct("<8sQQqQq6Q")
_TAIL_SIGNED = struct.Struct("<IQq")
_COUNTERS_AT: Final = LAYOUT.size + EXTENSION.size
NO_COUNTERS: Final = (0, 0, 0, 0, 0, 0)
_MASK: Final = (1 << 64) - 1
SEQUENCE = struct.Struct("<Q")
SEQUENCE_OFFSET: Final = 120  # 8-aligned: one load or store of the word is never torn
MAPPED_SIZE: Final = SEQUENCE_OFFSET + SEQUENCE.size
_PAD: Final = bytes(SEQUENCE_OFFSET - SIZE)


class Published(NamedTuple):
    pid: int  # 0: closed cleanly
    durable_lsn: int
    rewinds: int | None  # None: an older writer, or a torn read of the extension
    # appends, records, payload bytes, written bytes, fsyncs, dir fsyncs; None: unknown
    counters: tuple[int, ...] | None = None
    generation: int | None = None  # None: a writer before segwal 0.3, or a torn read


def encode(
    pid: int,
    durable_lsn: int,
    rewinds: int,
    counters: tuple[int, ...] = NO_COUNTERS,
    generation: int = 0,
) -> bytes:
    """The file's bytes; ``generation`` 0 publishes none (readers then plan every time)."""
    # Once per fdatasync: one pack for the fixed part, the counters masked only when one
    # outgrew 64 bits (they wrap, as u64 counters do).
    try:
        head = _HEAD_SIGNED.pack(
            MAGIC, pid, durable_lsn, ~durable_lsn, rewinds, ~rewinds, *counters
        )
        tail = _TAIL_SIGNED.pack(crc32c(head[_COUNTERS_AT:]), generation, ~generation)
    except struct.error:
        masked = (c & _MASK for c in counters)
        head = _HEAD.pack(
            MAGIC, pid, durable_lsn, ~durable_lsn & _MASK, rewinds, ~rewinds & _MASK, *masked
        )
        generation &= _MASK
        tail = _TAIL.pack(crc32c(head[_COUNTERS_AT:]), generation, ~generation & _MASK)
    return head + tail


def decode(raw: bytes) -> Published | None:
    """What a writer published, or None when the bytes are unreadable or torn."""
    if len(raw) < LAYOUT.size:
        return None
    magic, pid, durable, check = LAYOUT.unpack_from(raw)
    if magic != MAGIC or check != ~durable & _MASK:
        return None
    rewinds = None
    counters = None
    if len(raw) >= LAYOUT.size + EXTENSION.size:
        count, count_check = EXTENSION.unpack_from(raw, LAYOUT.size)
        if count_check == ~count & _MASK:
            rewinds = count
    start = LAYOUT.size + EXTENSION.size
    if len(raw) >= GENERATION_OFFSET:
        body = raw[start : start + COUNTERS.size]
        if COUNTERS_CRC.unpack_from(raw, start + COUNTERS.size)[0] == crc32c(body):
            counters = COUNTERS.unpack(body)
    generation = None
    if len(raw) >= SIZE:
        value, value_check = GENERATION.unpack_from(raw, GENERATION_OFFSET)
        if value and value_check == ~value & _MASK:
            generation = value
    return Published(pid, durable, rewinds, counters, generation)


def sequence_of(raw: bytes) -> int:
    """The sequence word in LOCK's bytes (0: none, a file written before 0.4)."""
    if len(raw) < MAPPED_SIZE:
        return 0
    value: int = SEQUENCE.unpack_from(raw, SEQUENCE_OFFSET)[0]
    return value


def encode_mapped(published: bytes, sequence: int) -> bytes:
    """The ``MAPPED_SIZE`` bytes a writer lays down when it opens the log: ``published``
    (``encode``'s bytes), zero padding, and an even ``sequence``."""
    return published + _PAD + SEQUENCE.pack(sequence & _MASK)


def next_sequence(found: int) -> int:
    """The first sequence a writer publishes with, continuing the one it found (even, never
    0, larger than ``found``): like the generation, no two sessions publish the same bytes."""
    return ((found | 1) + 1) & _MASK or 2
