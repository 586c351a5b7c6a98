"""The partial last block of a segment written with O_DIRECT (``direct_io=True``).

O_DIRECT takes whole blocks at block offsets from an aligned buffer, so each write of the
active segment rewrites the block its data starts in: the bytes already stored there (kept
here since the previous write, or read back when a segment is resumed; copied, never
encoded again), then the new bytes, then zeros to the block's end. The zeros are the
preallocated tail of ``docs/FORMAT.md``; the protocol is ``docs/DURABILITY.md``, "Direct
I/O".

The compiled single append (format/_direct.c, armed by log/fastpath.py) writes the same
blocks itself on a real file's O_DIRECT descriptor (``fd``), reading ``tail`` before and
setting it after, so this object stays the one owner of the partial block's bytes.
"""

from __future__ import annotations

from segwal.storage.fileio import (
    DIRECT_BLOCK,
    AlignedBuffer,
    Buffer,
    FileHandle,
    OsDirectFile,
    aligned_buffer,
)

MIN_BUFFER = 16 * DIRECT_BLOCK


class DirectTail:
    """Whole-block writes at a segment's tail through an O_DIRECT handle."""

    __slots__ = ("_buf", "handle", "tail")

    def __init__(self, handle: FileHandle, offset: int) -> None:
        self.handle = handle
        keep = offset % DIRECT_BLOCK
        self.tail = handle.pread(keep, offset - keep)  # the stored bytes of its last block
        self._buf: AlignedBuffer | None = None

    @property
    def fd(self) -> int:
        """The O_DIRECT descriptor of a real file, for the compiled fast path; -1 for any
        other handle (the memfs), whose blocks go through ``put``."""
        handle = self.handle
        return handle._dfd if isinstance(handle, OsDirectFile) else -1

    def end(self, offset: int, size: int) -> int:
        """Where a write of ``size`` bytes at ``offset`` ends, padded to a whole block."""
        return -(-(offset + size) // DIRECT_BLOCK) * DIRECT_BLOCK

    def put(self, data: Buffer, offset: int) -> None:
        """Write ``data`` at ``offset`` (the data end) as whole blocks, in one pwrite."""
        tail = self.tail
        start = offset - len(tail)
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        total = len(tail) + size
        padded = self.end(offset, size) - start
        buf = self._buf
        if buf is None or len(buf) < padded:
            if buf is not None:
                buf.close()
            buf = self._buf = aligned_buffer(max(padded, MIN_BUFFER))
        buf[: len(tail)] = tail
        buf[len(tail) : total] = data
        buf[total:padded] = bytes(padded - total)
        with memoryview(buf) as view, view[:padded] as piece:
            self.handle.pwrite(piece, start)
        keep = (offset + size) % DIRECT_BLOCK
        self.tail = buf[total - keep : total]

    def close(self) -> None:
        if self._buf is not None:
            self._buf.close()
            self._buf = None
