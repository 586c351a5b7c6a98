"""The contenders: one small class per log or store, each with the same methods.

A ``Peer`` makes ``Writer``s and ``Reader``s on a directory. The timed loops in
``workloads`` call only these, so every contender runs exactly the same loop:

- ``Writer.append(payload)`` one record, atomic on its own; ``append_batch(payloads)`` one
  atomic batch; ``thread_appender()`` an append callable for one of N threads; ``barrier()``
  the one durable barrier at the end of a buffered run; ``syncs()`` the data barriers the
  contender counted (None when it cannot count them, see ``Peer.sync_note``).
- ``Reader.scan()`` every record in order; ``get(lsn)`` the payload of record ``lsn``.

Keys are LSNs: segwal and SQLite (``INTEGER PRIMARY KEY``) number records themselves; lmdb
and RocksDB get 8-byte big-endian counters, so that key order is append order. lmdb and
rocksdict are optional (``pip install 'segwal[bench]'``) and imported only when used.
"""

from __future__ import annotations

import importlib
import itertools
import os
import sqlite3
import struct
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import segwal

KEY = struct.Struct(">Q")  # lmdb and RocksDB keys: big-endian, so byte order = LSN order
LMDB_MAP_SIZE = 1 << 36  # address space only; the file grows as pages are written
INSTALL_HINT = "pip install 'segwal[bench]'"


class Writer(ABC):
    """Appends to one log; made by ``Peer.writer`` on a fresh directory."""

    append: Callable[[bytes], object]
    append_batch: Callable[[list[bytes]], object]

    def thread_appender(self) -> Callable[[bytes], object]:
        """An append callable for one of N threads appending concurrently."""
        return self.append

    @abstractmethod
    def barrier(self) -> None:
        """Make everything appended so far durable (the end of a buffered run)."""

    def syncs(self) -> int | None:
        return None

    @abstractmethod
    def close(self) -> None: ...


class Reader(ABC):
    """Reads a log written by ``Peer.prepare``."""

    @abstractmethod
    def scan(self) -> Iterable[object]: ...

    @abstractmethod
    def get(self, lsn: int) -> bytes: ...

    @abstractmethod
    def close(self) -> None: ...


class Peer(ABC):
    """One contender."""

    name: ClassVar[str]
    module: ClassVar[str | None] = None  # the optional package it needs
    kinds: ClassVar[frozenset[str]] = frozenset(
        {"batch", "single", "durable", "group", "replay", "read"}
    )
    sync_note: ClassVar[str] = ""  # the documented barrier count, when not counted

    def missing(self) -> str | None:
        """None when usable, else the one-line reason it is skipped."""
        if self.module is None:
            return None
        try:
            importlib.import_module(self.module)
        except ImportError as exc:
            return f"{self.name} skipped: {exc} ({INSTALL_HINT})"
        return None

    def lib(self) -> Any:
        assert self.module is not None
        return importlib.import_module(self.module)

    def versions(self) -> dict[str, str]:
        return {}

    @abstractmethod
    def writer(self, path: str, durable: bool) -> Writer: ...

    @abstractmethod
    def reader(self, path: str) -> Reader: ...

    def prepare(self, path: str, work: list[list[bytes]]) -> None:
        """Write the records a replay or read workload reads (untimed, once per run)."""
        writer = self.writer(path, durable=False)
        try:
            for batch in work:
                writer.append_batch(batch)
            writer.barrier()
        finally:
            writer.close()


# -- segwal ------------------------------------------------------------------------------


class SegwalWriter(Writer):
    def __init__(
        self,
        path: str,
        durable: bool,
        buffer_bytes: int = 0,
        *,
        preallocate: bool = False,
        direct_io: bool = False,
    ) -> None:
        self.wal = segwal.open(
            path,
            sync="always" if durable else "never",
            buffer_bytes=buffer_bytes,
            preallocate=preallocate,
            direct_io=direct_io,
        )
        self.append = self.wal.append  # bound methods: no wrapper in the loop
        self.append_batch = self.wal.append_batch

    def barrier(self) -> None:
        self.wal.sync()

    def syncs(self) -> int:
        return self.wal.stats().fsyncs

    def close(self) -> None:
        self.wal.close()


class SegwalReader(Reader):
    def __init__(self, path: str, *, readonly: bool = False) -> None:
        self.wal = segwal.open(path, sync="never", readonly=readonly)  # opening runs recovery

    def scan(self) -> Iterable[object]:
        return self.wal.replay()

    def get(self, lsn: int) -> bytes:
        return self.wal.read(lsn).payload

    def close(self) -> None:
        self.wal.close()


class SegwalPeer(Peer):
    name = "segwal"
    kinds = Peer.kinds | {
        "open",
        "aio",
        "readview",
        "readsegs",
        "replayframes",
        "durable-prealloc",
        "durable-direct",
    }
    sync_note = "counted (Wal.stats().fsyncs)"

    def versions(self) -> dict[str, str]:
        return {"segwal": segwal.__version__}

    def writer(self, path: str, durable: bool) -> Writer:
        return SegwalWriter(path, durable)

    def trick_writer(self, path: str, trick: str) -> Writer:
        """A durable writer with the option of ``trick`` ("prealloc": preallocate=True,
        "direct": direct_io=True)."""
        if trick not in ("prealloc", "direct"):
            raise ValueError(f"no segwal writer for {trick!r}")
        return SegwalWriter(path, True, preallocate=True, direct_io=trick == "direct")

    def reader(self, path: str) -> Reader:
        return SegwalReader(path)


class SegwalBufferedPeer(SegwalPeer):
    """segwal with ``buffer_bytes``: single appends gather in memory and are written as one
    batch per MiB (a process crash loses what is still in memory; see the README)."""

    name = "segwal+buffer"
    kinds = frozenset({"single"})
    BUFFER_BYTES = 1 << 20

    def writer(self, path: str, durable: bool) -> Writer:
        return SegwalWriter(path, durable, 0 if durable else self.BUFFER_BYTES)


# -- sqlite3 (WAL mode) ------------------------------------------------------------------

_INSERT = "INSERT INTO log(payload) VALUES (?)"


def sqlite_connect(path: str, synchronous: str, *, create: bool = True) -> sqlite3.Connection:
    if create:
        os.makedirs(path, exist_ok=True)
    db = os.path.join(path, "log.db")
    conn = sqlite3.connect(db, isolation_level=None, timeout=60.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    if create:
        conn.execute("CREATE TABLE IF NOT EXISTS log (lsn INTEGER PRIMARY KEY, payload BLOB)")
    return conn


class SqliteWriter(Writer):
    def __init__(self, path: str, durable: bool) -> None:
        self.path = path
        self.synchronous = "FULL" if durable else "OFF"
        self.conn = sqlite_connect(path, self.synchronous)
        self.conns = [self.conn]
        self.guard = threading.Lock()  # the list of connections
        self.lock = threading.Lock()  # serialises the threads' transactions
        self.barriers = 0
        execute, executemany = self.conn.execute, self.conn.executemany

        def append(payload: bytes) -> object:
            return execute(_INSERT, (payload,))  # autocommit: one transaction per record

        def append_batch(batch: list[bytes]) -> object:
            execute("BEGIN")
            executemany(_INSERT, zip(batch))
            return execute("COMMIT")

        self.append = append
        self.append_batch = append_batch

    def thread_appender(self) -> Callable[[bytes], object]:
        # One connection per thread; a Python lock around each transaction, so that writers
        # queue on the lock instead of sleeping in SQLite's busy handler (1, 2, 5, 10 ms...).
        conn = sqlite_connect(self.path, self.synchronous, create=False)
        with self.guard:
            self.conns.append(conn)
        execute, lock = conn.execute, self.lock

        def append(payload: bytes) -> object:
            with lock:
                return execute(_INSERT, (payload,))

        return append

    def barrier(self) -> None:
        for name in ("log.db-wal", "log.db"):
            file = os.path.join(self.path, name)
            if os.path.exists(file):
                fd = os.open(file, os.O_RDONLY)
                try:
                    os.fdatasync(fd)
                    self.barriers += 1
                finally:
                    os.close(fd)

    def syncs(self) -> int | None:
        return self.barriers if self.synchronous == "OFF" else None

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


class SqliteReader(Reader):
    def __init__(self, path: str) -> None:
        self.conn = sqlite_connect(path, "OFF", create=False)

    def scan(self) -> Iterable[object]:
        return self.conn.execute("SELECT lsn, payload FROM log ORDER BY lsn")

    def get(self, lsn: int) -> bytes:
        row = self.conn.execute("SELECT payload FROM log WHERE lsn = ?", (lsn,)).fetchone()
        return bytes(row[0])

    def close(self) -> None:
        self.conn.close()


class Sqlite3Peer(Peer):
    name = "sqlite3"
    sync_note = "WAL mode, synchronous=FULL: one fsync of the WAL per commit, plus checkpoints"

    def versions(self) -> dict[str, str]:
        return {"sqlite": sqlite3.sqlite_version}

    def writer(self, path: str, durable: bool) -> Writer:
        return SqliteWriter(path, durable)

    def reader(self, path: str) -> Reader:
        return SqliteReader(path)

    def prepare(self, path: str, work: list[list[bytes]]) -> None:
        super().prepare(path, work)
        conn = sqlite_connect(path, "OFF", create=False)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # readers find it in the database
        finally:
            conn.close()


# -- lmdb --------------------------------------------------------------------------------


class LmdbWriter(Writer):
    def __init__(self, lmdb: Any, path: str, durable: bool) -> None:
        # sync=True: fdatasync of the data at each commit, then of the meta page (metasync).
        self.env = lmdb.open(
            path, map_size=LMDB_MAP_SIZE, sync=durable, metasync=durable, max_dbs=0
        )
        begin, pack = self.env.begin, KEY.pack
        counter = itertools.count(1)

        def append(payload: bytes) -> object:
            with begin(write=True) as txn:  # writers serialise on lmdb's write lock, so
                return txn.put(pack(next(counter)), payload, append=True)  # keys ascend

        def append_batch(batch: list[bytes]) -> object:
            with begin(write=True) as txn:
                items = [(pack(next(counter)), p) for p in batch]
                return txn.cursor().putmulti(items, append=True)

        self.append = append
        self.append_batch = append_batch

    def barrier(self) -> None:
        self.env.sync(True)

    def close(self) -> None:
        self.env.close()


class LmdbReader(Reader):
    def __init__(self, lmdb: Any, path: str) -> None:
        self.env = lmdb.open(path, readonly=True, lock=False)
        self.txn = self.env.begin(buffers=False)

    def scan(self) -> Iterable[object]:
        return self.txn.cursor().iternext(keys=True, values=True)  # type: ignore[no-any-return]

    def get(self, lsn: int) -> bytes:
        return self.txn.get(KEY.pack(lsn))  # type: ignore[no-any-return]

    def close(self) -> None:
        self.txn.abort()
        self.env.close()


class LmdbPeer(Peer):
    name = "lmdb"
    module = "lmdb"
    sync_note = "sync=True: two fdatasyncs per commit (data, then meta page); writers serialise"

    def versions(self) -> dict[str, str]:
        lib = self.lib()
        return {"lmdb": f"{lib.__version__} (LMDB {'.'.join(map(str, lib.version()))})"}

    def writer(self, path: str, durable: bool) -> Writer:
        return LmdbWriter(self.lib(), path, durable)

    def reader(self, path: str) -> Reader:
        return LmdbReader(self.lib(), path)


# -- rocksdict (RocksDB) -----------------------------------------------------------------


def rocks_options(lib: Any) -> Any:
    options = lib.Options(raw_mode=True)  # bytes keys and values, no pickling
    options.create_if_missing(True)
    return options


class RocksWriter(Writer):
    def __init__(self, lib: Any, path: str, durable: bool) -> None:
        self.db = lib.Rdict(path, rocks_options(lib))
        write_options = lib.WriteOptions()
        write_options.sync = durable  # the WAL stays on; sync=True syncs it on each write
        self.db.set_write_options(write_options)
        put, write, pack = self.db.put, self.db.write, KEY.pack
        new_batch = lib.WriteBatch
        counter = itertools.count(1)

        def append(payload: bytes) -> object:
            return put(pack(next(counter)), payload)

        def append_batch(batch: list[bytes]) -> object:
            wb = new_batch(raw_mode=True)
            for p in batch:
                wb.put(pack(next(counter)), p)
            return write(wb)

        self.append = append
        self.append_batch = append_batch

    def barrier(self) -> None:
        self.db.flush_wal(True)

    def close(self) -> None:
        self.db.close()


class RocksReader(Reader):
    def __init__(self, lib: Any, path: str) -> None:
        self.db = lib.Rdict(path, rocks_options(lib), access_type=lib.AccessType.read_only())

    def scan(self) -> Iterable[object]:
        return self.db.items()  # type: ignore[no-any-return]

    def get(self, lsn: int) -> bytes:
        return self.db[KEY.pack(lsn)]  # type: ignore[no-any-return]

    def close(self) -> None:
        self.db.close()


class RocksdictPeer(Peer):
    name = "rocksdict"
    module = "rocksdict"
    sync_note = "WriteOptions sync=True: RocksDB syncs its WAL once per write group"

    def versions(self) -> dict[str, str]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return {"rocksdict": version("rocksdict")}
        except PackageNotFoundError:
            return {"rocksdict": "?"}

    def writer(self, path: str, durable: bool) -> Writer:
        return RocksWriter(self.lib(), path, durable)

    def reader(self, path: str) -> Reader:
        return RocksReader(self.lib(), path)
