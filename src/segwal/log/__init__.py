"""Layer 3: the log. The ``Wal`` facade and the objects it is composed of.

Internal: the public API is what ``segwal`` exports (``segwal.open``, ``segwal.Wal``,
``segwal.Cursor``, ``segwal.WalConfig``, ...); these module paths may change.

- ``config``: ``WalConfig``, the one table of defaults, validated.
- ``wal``: ``Wal``: open, append, rotate, close, by delegating.
- ``base``: the state every part of ``Wal`` shares, and its checks.
- ``commit``: group commit (written and durable LSNs, one fsync for many appenders).
- ``reading``: read, replay, follow over a snapshot of the segments.
- ``maintenance``: checkpoints, holds, retention, truncation, cursors' storage.
- ``retention``: which sealed segments may go (pure decisions).
- ``cursors``: named consumer positions.
"""
