"""The physical baseline: length-prefixed records with ``os.write`` and ``os.fdatasync``.

No checksum, no header, no segments, no crash recovery: the most a Python program gets from
the disk, not a usable log. Durable appends are ``write`` + ``fdatasync`` per record; with N
threads they share one fd through ``RawGroupLog``, the simplest correct leader/follower
group commit. Random reads go through an in-memory offset index built on the first read.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator

from segwal.bench.peers import Peer, Reader, Writer

LEN = struct.Struct("<I")
FILE = "log.raw"


def encode(batch: list[bytes]) -> bytes:
    """Length-prefixed records, the raw baseline's whole format."""
    pack = LEN.pack
    return b"".join([part for p in batch for part in (pack(len(p)), p)])


class RawGroupLog:
    """The simplest correct group commit in Python, over one shared fd.

    Writers append under a lock; the first one that needs durability leads an fdatasync that
    covers everything written when it started, followers wait on a condition; a follower not
    covered leads the next one. The same algorithm as segwal's, minus everything else.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.write_lock = threading.Lock()
        self.cond = threading.Condition(threading.Lock())
        self.written = 0
        self.durable = 0
        self.busy = False
        self.syncs = 0

    def append(self, payload: bytes) -> int:
        data = LEN.pack(len(payload)) + payload
        cond = self.cond
        with self.write_lock:
            os.write(self.fd, data)
            with cond:
                self.written += 1
                seq = self.written
        with cond:
            while self.durable < seq:
                if self.busy:
                    cond.wait()
                    continue
                self.busy = True
                target = self.written
                cond.release()
                try:
                    os.fdatasync(self.fd)
                finally:
                    cond.acquire()
                    self.busy = False
                    self.syncs += 1
                    self.durable = max(self.durable, target)
                    cond.notify_all()
        return seq


class RawWriter(Writer):
    def __init__(self, path: str, durable: bool) -> None:
        os.makedirs(path, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        self.fd = fd = os.open(os.path.join(path, FILE), flags, 0o644)
        self.barriers = 0
        self.group: RawGroupLog | None = None
        self.guard = threading.Lock()
        write, fdatasync, pack = os.write, os.fdatasync, LEN.pack

        if durable:

            def append(payload: bytes) -> object:
                write(fd, pack(len(payload)) + payload)
                fdatasync(fd)
                self.barriers += 1
                return None

        else:

            def append(payload: bytes) -> object:
                return write(fd, pack(len(payload)) + payload)

        def append_batch(batch: list[bytes]) -> object:
            written = write(fd, encode(batch))
            if durable:
                fdatasync(fd)
                self.barriers += 1
            return written

        self.append = append
        self.append_batch = append_batch

    def thread_appender(self) -> Callable[[bytes], object]:
        with self.guard:
            if self.group is None:
                self.group = RawGroupLog(self.fd)
            return self.group.append

    def barrier(self) -> None:
        os.fdatasync(self.fd)
        self.barriers += 1

    def syncs(self) -> int:
        return self.barriers + (self.group.syncs if self.group else 0)

    def close(self) -> None:
        os.close(self.fd)


def records(path: str, chunk: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
    """Parse the length-prefixed file: (lsn, payload) per record, reading 1 MiB at a time."""
    unpack_from = LEN.unpack_from
    lsn = 0
    carry = b""
    with open(os.path.join(path, FILE), "rb", buffering=0) as f:
        while True:
            data = f.read(chunk)
            if not data:
                break
            buf = carry + data if carry else data
            pos, end = 0, len(buf)
            while pos + 4 <= end:
                (size,) = unpack_from(buf, pos)
                stop = pos + 4 + size
                if stop > end:
                    break
                lsn += 1
                yield (lsn, buf[pos + 4 : stop])
                pos = stop
            carry = buf[pos:]
    if carry:
        raise ValueError(f"raw log ends with {len(carry)} stray bytes")


class RawReader(Reader):
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(os.path.join(path, FILE), os.O_RDONLY)
        self.offsets: list[int] = []  # offset of record i+1's payload; built on first get
        self.sizes: list[int] = []

    def scan(self) -> Iterable[object]:
        return records(self.path)

    def index(self) -> None:
        offsets, sizes = self.offsets, self.sizes
        pos = 0
        for _lsn, payload in records(self.path):
            offsets.append(pos + 4)
            sizes.append(len(payload))
            pos += 4 + len(payload)

    def get(self, lsn: int) -> bytes:
        if not self.offsets:
            self.index()
        return os.pread(self.fd, self.sizes[lsn - 1], self.offsets[lsn - 1])

    def close(self) -> None:
        os.close(self.fd)


PREALLOC_STEP = 1 << 20  # as segwal's preallocate=True (log/config.py PREALLOCATE_STEP)
BLOCK = 4096  # as segwal's direct_io=True (storage/fileio.py DIRECT_BLOCK)


class RawPreallocWriter(Writer):
    """Durable appends that overwrite space allocated ahead (posix_fallocate, in the same
    steps as segwal's ``preallocate=True``): the raw loop using segwal's trick, so the
    ``durable-100B-prealloc`` row compares like with like. With ``direct``, as segwal's
    ``direct_io=True``: O_DIRECT writes of whole 4 KiB blocks from a page-aligned buffer,
    the partial last block rewritten with each record (``durable-100B-direct``)."""

    def __init__(self, path: str, *, direct: bool = False) -> None:
        os.makedirs(path, exist_ok=True)
        name = os.path.join(path, FILE)
        self.fd = fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.dfd = os.open(name, os.O_WRONLY | os.O_DIRECT) if direct else -1
        self.barriers = 0
        os.posix_fallocate(fd, 0, PREALLOC_STEP)
        os.fsync(fd)
        self.buf = mmap.mmap(-1, 16 * BLOCK)
        state = [0, PREALLOC_STEP]  # offset, allocated
        pwrite, fdatasync, pack, fallocate = os.pwrite, os.fdatasync, LEN.pack, os.posix_fallocate
        buf, dfd = self.buf, self.dfd
        tail = [b""]

        def write_direct(data: bytes, offset: int) -> None:
            kept = tail[0]
            start = offset - len(kept)
            total = len(kept) + len(data)
            padded = -(-total // BLOCK) * BLOCK
            buf[: len(kept)] = kept
            buf[len(kept) : total] = data
            buf[total:padded] = bytes(padded - total)
            with memoryview(buf) as view, view[:padded] as piece:
                pwrite(dfd, piece, start)
            keep = (offset + len(data)) % BLOCK
            tail[0] = buf[total - keep : total]

        def append(payload: bytes) -> object:
            data = pack(len(payload)) + payload
            offset = state[0]
            if offset + len(data) + BLOCK > state[1]:
                fallocate(fd, state[1], PREALLOC_STEP)
                state[1] += PREALLOC_STEP
            if direct:
                write_direct(data, offset)
            else:
                pwrite(fd, data, offset)
            state[0] = offset + len(data)
            fdatasync(fd)
            self.barriers += 1
            return None

        def append_batch(batch: list[bytes]) -> object:
            for payload in batch:
                append(payload)
            return None

        self.append = append
        self.append_batch = append_batch

    def barrier(self) -> None:
        os.fdatasync(self.fd)
        self.barriers += 1

    def syncs(self) -> int:
        return self.barriers

    def close(self) -> None:
        if self.dfd >= 0:
            os.close(self.dfd)
        os.close(self.fd)
        self.buf.close()


class RawPeer(Peer):
    name = "raw"
    sync_note = "counted: one per durable append; group rows: one per leader"
    kinds = Peer.kinds | {"durable-prealloc", "durable-direct"}

    def writer(self, path: str, durable: bool) -> Writer:
        return RawWriter(path, durable)

    def trick_writer(self, path: str, trick: str) -> Writer:
        """A durable writer using ``trick`` ("prealloc" or "direct")."""
        if trick not in ("prealloc", "direct"):
            raise ValueError(f"no raw writer for {trick!r}")
        return RawPreallocWriter(path, direct=trick == "direct")

    def reader(self, path: str) -> Reader:
        return RawReader(path)
