"""The side-by-side benchmark suite: ``segwal bench`` or ``python -m segwal.bench``.

segwal against sqlite3 (WAL mode), lmdb, RocksDB (rocksdict) and raw ``os.write`` +
``os.fdatasync``, measured in one run with interleaved repetitions; the report is Markdown
with one table per workload group, plus a plot of durable throughput against threads.

Modules: ``workloads`` (what is timed), ``peers`` and ``raw`` (the contenders), ``runner``
(repetitions, medians, progress), ``system`` (machine description, page-cache dropping),
``report`` (Markdown, JSON, plot), ``command`` (the click command ``bench``). Importing the
package needs only segwal and the standard library (click is one of segwal's dependencies);
lmdb, rocksdict, rich and matplotlib are imported when used.
"""

from segwal.bench.command import bench

__all__ = ["bench"]
