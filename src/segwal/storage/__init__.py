"""Layers 1-2: files. The I/O seam, segments on disk, and what opening a directory does.

Every syscall on log data goes through ``fileio`` (the seam the in-memory file system of
``segwal.testing`` implements). Above it: one segment's writer and reader, the sparse index
sidecars, the LOCK and META files, recovery planning (pure decisions over what was read),
the repair that carries a plan out, the rewrite behind ``truncate_after``, and verify.

Internal: not part of the public API (that is what ``segwal`` itself exports).

- ``fileio``: the seam; ``OsFileSystem``; OSError to StorageError in one place.
- ``segment``: ``SegmentWriter`` (one write per batch, sync, seal); header, seal and frame reads.
- ``index``: sparse LSN-to-offset index and its ``.idx`` sidecar files.
- ``lockfile``: the writer lock and the durable LSN published in LOCK.
- ``meta``: the META file (checkpoint, holds, rewind intent).
- ``recovery``: directory listing + tail scan -> a plan (what to cut, quarantine, remove).
- ``repair``: carries a plan out, each step durable before the next.
- ``tail``: the active segment at open, resumed or created.
- ``truncation``: the prefix rewrite behind ``truncate_after``.
- ``verify``: reads every byte of every segment.
"""
