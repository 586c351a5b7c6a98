"""Layer 3: the log. The ``Wal`` facade and the objects it is composed of.

Internal: the public API is what ``segwal`` exports (``segwal.open``, ``segwal.Wal``,
``segwal.Cursor``, ``segwal.WalConfig``, ...); these module paths may change.

- ``wal``: ``Wal``, the facade: wires the parts together, opens and closes, delegates.
- ``config``: ``WalConfig``, the one table of defaults, validated.
- ``arguments``: the checks of every public argument.
- ``state``: ``LogState``, what every part shares (lock, open/failed, META, counters,
  observers, the rewind count) and the checks on it.
- ``opening``: opening as the writer (recover, resume or create the active segment) or
  as a readonly view.
- ``appender``: appends (single, batch, many), the buffer's flushes, barriers, close.
- ``flusher``: the ``sync="interval"`` thread.
- ``buffer``: ``AppendBuffer``, single appends waiting to be written as one batch.
- ``rotation``: when the active segment is sealed, and the sealing.
- ``commit``: ``GroupCommit``, the written and durable LSNs; one fdatasync for many.
- ``catalog``: ``SegmentCatalog``, the segments as immutable generations, reader counts,
  deferred deletion.
- ``reading``: ``Reader``: read, replay, read_batch, lsn_at, follow.
- ``maintenance``: truncation, retention, holds, cursors.
- ``plans``: what a truncation would do (pure), and the result types.
- ``retention``: which sealed segments may go (pure).
- ``cursors``: consumer cursors and their files.
- ``telemetry``: the fsync histogram, counters and log lines.
"""
