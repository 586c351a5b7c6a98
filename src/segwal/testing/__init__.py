"""Crash-testing tools: an in-memory file system that records, forgets and fails.

:class:`MemoryFileSystem` implements the :class:`segwal.storage.fileio.FileSystem` seam in memory.
It answers like :class:`~segwal.storage.fileio.OsFileSystem` (same results, same
:class:`~segwal.errors.StorageError` with the same ``errno``) and also tracks what a power
loss would keep, under the fault model of the reliability guide:

* Writes and truncates of a file stay *pending* until a ``sync`` of that file completes.
  A pending write is cut at 512-byte sector boundaries into pieces that persist or not
  independently; a pending truncate persists or not as a whole.
* Creates, renames and unlinks stay pending until ``sync_dir`` of their directory. Each
  persists or not as a whole, so a rename is atomic: old name or new, never neither. A
  rename between two directories becomes durable when either of them is synced.
* Data survives only through names: an inode is in a crash image when a persisted name
  reaches it, so a renamed file keeps its content.
* Past the durable end of a file, a piece that did not persist may still be inside the
  file (the size reached the disk before the data): it reads as zeros or as garbage.
* A barrier that raised covers nothing and later barriers are not trusted for what it
  should have covered: the operations pending at a failed ``sync`` (or ``sync_dir``) stay
  pending for ever, so they may or may not survive any later crash. Operations made after
  the failure become durable at the next successful barrier as usual.

Every mutating call is recorded in :attr:`MemoryFileSystem.ops`, together with the notes a
harness adds (``fs.mark_ack(lsn)``). :meth:`MemoryFileSystem.replay` rebuilds the file
system as of any operation index, and :meth:`MemoryFileSystem.crash_states` lists the
disks a power loss could leave at that moment::

    fs = MemoryFileSystem()
    run_workload(fs)                           # calls fs.mark_ack(lsn) when acknowledged
    for k, state in fs.replays():              # the state after ops[:k], k = 0..op_count
        acked = state.notes("ack")
        for image in state.crash_states(seed=k):
            check_recovery(image, acked)       # each image is a fresh, fully durable fs

``replay(k)`` gives one state; ``replays()`` walks them all in one pass. To crash only at
barriers, keep the k where ``fs.ops[k - 1].kind`` is ``"sync"`` or ``"sync_dir"``. To
crash during recovery, run it on an image: the image records its own log from there.

Faults: ``fs.fail("write", nth=3, error=errno.ENOSPC, short=100)`` and
``MemoryFileSystem(skip_sync_sites={"append"})`` (a skipped barrier does nothing).
Crash images, forks and replays start with no faults armed and no open handles or locks;
replays and forks keep ``skip_sync_sites``, images do not.

Known differences from :class:`~segwal.storage.fileio.OsFileSystem`: a handle on a directory
reports size 4096 (as on ext4); symbolic links, permissions and hard links do not exist;
``..`` is resolved lexically; relative paths are relative to ``/``.
"""

from segwal.testing.imaging import FILLS, candidate_subsets
from segwal.testing.memfs import MemoryFile, MemoryFileSystem
from segwal.testing.nodes import SECTOR
from segwal.testing.records import FAULT_KINDS, Fault, Op

__all__ = [
    "FAULT_KINDS",
    "FILLS",
    "SECTOR",
    "Fault",
    "MemoryFile",
    "MemoryFileSystem",
    "Op",
    "candidate_subsets",
]
