"""SIGKILL under load with real processes.

A forked child (fork without exec, so each round costs milliseconds) opens the log and
appends single records, small batches and the odd multi-frame batch of large records,
rotating now and then. It writes an LSN to a pipe only once that LSN is durable: after each
append with sync="always", after ``wait_durable`` with "interval", after ``sync()`` with
"never". The parent kills it at a seeded random instant, then reopens the log itself and
checks the promise of docs/RELIABILITY.md: the open never raises; the records are LSNs
first..last with no gap, each byte-exact; every acknowledged LSN is there; a new append
works; a second open agrees. Some rounds first leave recovery work behind (a torn tail or a
leftover temp file) and kill the child while it is still opening.

SIGKILL only kills the process: the page cache survives, so this covers process crashes,
not power loss (the crash-state tests on the in-memory file system cover that).

Payload content is a pure function of (LSN, length), and the length is written into the
payload, so the checker needs no record of what the children wrote.

The same loop runs on format v2 logs (``CODINGS``): zstd frames, and zstd frames encrypted
under a key-encryption key, with the child and the checker opening the log alike.
"""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import struct
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import segwal
from helpers_logs import append_bytes, frame_bytes, header_seed, segment_files

OPENED = -1
_ACK = struct.Struct("<q")
_HEAD = struct.Struct("<QI")  # lsn, length: the first 12 bytes of every payload
BIG = 500_000  # three of these make a batch of two frames (FRAME_TARGET_BYTES is 1 MiB)


def kill_payload(lsn: int, size: int) -> bytes:
    """The only correct payload of ``lsn`` with this length (at least 12 bytes)."""
    pattern = hashlib.blake2b(lsn.to_bytes(8, "little"), digest_size=64).digest()
    body = pattern * ((size - _HEAD.size) // len(pattern) + 1)
    return _HEAD.pack(lsn, size) + body[: size - _HEAD.size]


def check_payload(lsn: int, payload: bytes) -> None:
    assert len(payload) >= _HEAD.size, f"LSN {lsn}: payload of {len(payload)} bytes"
    got_lsn, size = _HEAD.unpack_from(payload)
    assert (got_lsn, size) == (lsn, len(payload)), f"LSN {lsn}: header {(got_lsn, size)}"
    assert payload == kill_payload(lsn, size), f"LSN {lsn}: payload bytes differ"


@dataclass
class Tally:
    kills: int = 0
    kills_during_open: int = 0
    acked_checked: int = 0
    records_checked: int = 0
    max_acked: int = 0
    cuts: int = 0
    temp_removed: int = 0
    sealed_tails: int = 0
    injected: dict[str, int] = field(default_factory=dict)

    def line(self, label: str) -> str:
        return (
            f"{label}: {self.kills} kills ({self.kills_during_open} while opening), "
            f"{self.acked_checked} acknowledged LSNs checked, {self.records_checked} records "
            f"read back, recovery cuts {self.cuts}, temp files removed {self.temp_removed}, "
            f"sealed tails {self.sealed_tails}, injected {self.injected}"
        )


def _child(path: Path, mode: str, seed: int, ack_fd: int, options: dict[str, object]) -> None:
    """Runs in the forked child until it is killed; never returns."""
    code = 0
    try:
        rng = random.Random(seed)
        # "never+buffer": sync="never" with single appends gathered in memory (buffer_bytes);
        # "+pipeline": batches compressed on worker threads (compression_threads), queued.
        sync, _, extra = mode.partition("+")
        if "buffer" in extra:
            options = {**options, "buffer_bytes": rng.choice([200, 4096, 65536])}
        if "pipeline" in extra:
            options = {**options, "compression_threads": rng.choice([1, 2])}
        wal = segwal.open(path, sync=sync, sync_interval=0.002, **options)  # type: ignore[arg-type]
        os.write(ack_fd, _ACK.pack(OPENED))
        while True:
            nxt = wal.last_lsn + 1
            roll = rng.random()
            if roll < 0.55:
                last = wal.append(kill_payload(nxt, rng.randint(12, 300)))
            elif roll < 0.93:
                sizes = [rng.randint(12, 200) for _ in range(rng.randint(2, 30))]
                got = wal.append_batch([kill_payload(nxt + i, s) for i, s in enumerate(sizes)])
                last = got[-1]
            elif roll < 0.98:
                wal.rotate()
                continue
            else:
                got = wal.append_batch([kill_payload(nxt + i, BIG) for i in range(3)])
                last = got[-1]
            if sync == "always":
                os.write(ack_fd, _ACK.pack(last))
            elif rng.random() < 0.25:
                if sync == "interval":
                    assert wal.wait_durable(last, timeout=10)
                    os.write(ack_fd, _ACK.pack(last))
                else:
                    os.write(ack_fd, _ACK.pack(wal.sync()))
    except BaseException:
        code = 3
        with open(path.parent / f"child-error-{os.getpid()}.txt", "w") as out:
            out.write(traceback.format_exc())
    finally:
        os._exit(code)


def _inject(log: Path, rng: random.Random, tally: Tally) -> None:
    """Leave recovery some work: junk after the last frame, or a leftover temp file."""
    segs = segment_files(log)
    if not segs:
        return
    last = segs[-1]
    what = rng.choice(["zeros", "partial frame", "temp file", "garbage"])
    if what == "zeros":
        append_bytes(last, bytes(rng.randint(1, 3000)))
    elif what == "garbage":
        append_bytes(last, rng.randbytes(rng.randint(1, 3000)))
    elif what == "partial frame":
        # The next LSN's frame, torn. Its durable LSN is below its own LSN, as a writer's
        # would be, so nothing after the damage can make it look like corruption.
        lsn = int(last.name[:20]) + 10**6  # never a valid continuation
        frame = frame_bytes(header_seed(last), lsn, [b"t" * 500], durable_lsn=0)
        append_bytes(last, frame[: rng.randint(1, len(frame) - 1)])
    else:
        (log / (last.name + ".tmp")).write_bytes(b"half a header")
    tally.injected[what] = tally.injected.get(what, 0) + 1


def _read_acks(fd: int, first: bytes = b"") -> tuple[bool, list[int]]:
    chunks = [first]
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    data = b"".join(chunks)
    assert len(data) % _ACK.size == 0, "a pipe write was torn"
    values = [v for (v,) in _ACK.iter_unpack(data)]
    opened = OPENED in values
    return opened, [v for v in values if v != OPENED]


def _check(log: Path, acked: int, tally: Tally, coding: dict[str, object]) -> None:
    """Reopen: never raises, a consistent byte-exact prefix covering every ack, appends
    work, and a second open agrees. ``coding``: the compression and key options the log
    was written with (the reopen writes with them too)."""
    with segwal.open(log, segment_bytes=1 << 20, **coding) as wal:  # type: ignore[arg-type]
        report = wal.recovery
        tally.cuts += len(report.cuts)
        tally.temp_removed += len(report.removed_temp_files)
        tally.sealed_tails += int(report.sealed_tail)
        for cut in report.cuts:
            # A kill never damages anything but the end of the last segment.
            assert cut.path == str(segment_files(log)[-1]), report
        assert report.quarantined == (), report
        assert wal.first_lsn == 1
        assert wal.last_lsn >= acked, f"acknowledged LSN {acked} lost: log ends at {wal.last_lsn}"
        expected = 1
        for record in wal.replay():
            assert record.lsn == expected, (record.lsn, expected)
            check_payload(record.lsn, record.payload)
            expected += 1
        assert expected == wal.last_lsn + 1
        tally.records_checked += wal.last_lsn
        tally.acked_checked += acked
        nxt = wal.last_lsn + 1
        assert wal.append(kill_payload(nxt, 40)) == nxt
    with segwal.open(log, **coding) as wal:  # type: ignore[arg-type]
        assert wal.recovery.clean and not wal.recovery.removed_temp_files, wal.recovery
        assert wal.last_lsn == nxt
        check_payload(nxt, wal.read(nxt).payload)
        check_payload(1, wal.read(1).payload)
    tally.max_acked = max(tally.max_acked, acked)


def run_kills(
    root: Path,
    mode: str,
    kills: int,
    seed: int,
    *,
    per_dir: int = 10,
    coding: dict[str, object] | None = None,
) -> Tally:
    """``kills`` rounds; ``coding`` (compression, encryption_key) for a format v2 log."""
    coding = coding or {}
    rng = random.Random(seed)
    tally = Tally()
    log = root / f"{mode}-0"
    for round_no in range(kills):
        if round_no % per_dir == 0:
            log = root / f"{mode}-{round_no // per_dir}"
            options: dict[str, object] = {
                "segment_bytes": rng.choice([8 << 10, 16 << 10, 64 << 10]),
                **coding,
            }
        during_open = round_no % 4 == 3
        if during_open:
            _inject(log, rng, tally)
        options["recovery"] = "truncate" if rng.random() < 0.2 else "tolerate_tail"
        read_fd, write_fd = os.pipe()
        child_seed = rng.randrange(1 << 32)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(read_fd)
            _child(log, mode, child_seed, write_fd, options)
        os.close(write_fd)
        first = b""
        if during_open:
            time.sleep(rng.uniform(0, 0.004))
        else:
            # Under load, wait for the open to finish so the kill lands among the appends.
            if select.select([read_fd], [], [], 30)[0]:
                first = os.read(read_fd, _ACK.size)
            time.sleep(rng.uniform(0.002, 0.03))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        opened, acks = _read_acks(read_fd, first)
        errors = sorted(root.glob("child-error-*.txt"))
        assert not errors, errors[0].read_text()
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
        tally.kills += 1
        tally.kills_during_open += int(not opened)
        assert acks == sorted(acks), "acknowledgements went backwards"
        _check(log, max(acks, default=0), tally, coding)
    return tally


MODES = ("always", "interval", "never", "interval+buffer", "never+buffer")


@pytest.mark.timeout(600)
def test_sigkill_under_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """About 1,020 kills across the three sync modes, two of them also with buffered single
    appends (seeded; the seed is in the output)."""
    seed = 0x5E6_3A1
    started = time.perf_counter()
    lines = []
    total = Tally()
    for index, mode in enumerate(MODES):
        tally = run_kills(tmp_path, mode, kills=204, seed=seed + index)
        lines.append(tally.line(f"sync={mode}"))
        total.kills += tally.kills
        total.kills_during_open += tally.kills_during_open
        total.acked_checked += tally.acked_checked
        total.records_checked += tally.records_checked
        assert tally.max_acked > 0, f"sync={mode}: no append was ever acknowledged"
    elapsed = time.perf_counter() - started
    with capsys.disabled():  # the counts belong in the CI log
        print(f"\nSIGKILL test, seed {seed:#x}, {elapsed:.1f}s")
        for line in lines:
            print("  " + line)
        print(
            f"  total: {total.kills} kills ({total.kills_during_open} while opening), "
            f"{total.acked_checked} acknowledged LSNs checked, "
            f"{total.records_checked} records read back, 0 acknowledged records lost"
        )
    assert total.kills >= 1000
    assert total.kills_during_open > 0


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("mode", MODES)
def test_sigkill_under_load_long(tmp_path: Path, mode: str) -> None:
    """The long run: 2,000 kills per sync mode, bigger directories."""
    seed = int.from_bytes(hashlib.sha256(mode.encode()).digest()[:4], "little")
    tally = run_kills(tmp_path, mode, kills=2000, seed=seed, per_dir=40)
    print(f"\nseed {seed:#x}: " + tally.line(f"sync={mode}"))


# Format v2: zstd frames (kill payloads repeat a 64-byte pattern, so most frames compress),
# and zstd frames encrypted under a key-encryption key (segwal's own key ring, KEYS file).
CODINGS: dict[str, dict[str, object]] = {
    "zstd": {"compression": "zstd"},
    "zstd+aes": {"compression": "zstd", "encryption_key": bytes(range(32))},
}
V2_MODES = ("always", "never", "never+buffer")
V2_KILLS = 40  # per coding and mode: 240 kills in all


@pytest.mark.timeout(600)
def test_sigkill_under_load_compressed_and_encrypted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """240 kills of writers of compressed and of compressed + encrypted logs (seeded; the
    seed is in the output): the same promise, and the reopen reads every frame back
    through the codec and the key."""
    pytest.importorskip("backports.zstd" if sys.version_info < (3, 14) else "compression.zstd")
    pytest.importorskip("cryptography")
    seed = 0x5E6_3A2
    started = time.perf_counter()
    lines = []
    kills = during_open = 0
    for c, (name, coding) in enumerate(CODINGS.items()):
        for m, mode in enumerate(V2_MODES):
            tally = run_kills(
                tmp_path / name, mode, kills=V2_KILLS, seed=seed + 16 * c + m, coding=coding
            )
            assert tally.max_acked > 0, f"{name} sync={mode}: no append was ever acknowledged"
            lines.append(tally.line(f"{name} sync={mode}"))
            kills += tally.kills
            during_open += tally.kills_during_open
    for name, flag in (("zstd", 0x01), ("zstd+aes", 0x03)):
        # Version 2 headers (offset 8) with the COMPRESSED (and ENCRYPTED) flags (offset 10).
        heads = [p.read_bytes()[8:12] for p in (tmp_path / name).rglob("*.wal")]
        assert any(h[:2] == b"\x02\x00" and h[2] & flag == flag for h in heads), name
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nSIGKILL test (format v2), seed {seed:#x}, {elapsed:.1f}s")
        for line in lines:
            print("  " + line)
    assert kills >= 240
    assert during_open > 0


@pytest.mark.timeout(600)
def test_sigkill_with_a_compression_dictionary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """80 kills of writers of logs compressed with a trained dictionary (issue 11): every
    open stores the dictionary (a kill may land inside that), segments name it, and every
    reopen reads every acknowledged record back through it."""
    pytest.importorskip("backports.zstd" if sys.version_info < (3, 14) else "compression.zstd")
    from dictlib import trained

    coding: dict[str, object] = {"compression": "zstd", "compression_dictionary": trained()}
    seed = 0x5E6_3A3
    lines = []
    for m, mode in enumerate(("always", "never+buffer")):
        tally = run_kills(tmp_path / "dict", mode, kills=40, seed=seed + m, coding=coding)
        assert tally.max_acked > 0, f"sync={mode}: no append was ever acknowledged"
        lines.append(tally.line(f"dictionary sync={mode}"))
    heads = [p.read_bytes()[:128] for p in (tmp_path / "dict").rglob("*.wal")]
    assert any(h[116:120] != bytes(4) for h in heads)  # segments name the dictionary
    with capsys.disabled():
        print(f"\nSIGKILL test (dictionary), seed {seed:#x}")
        for line in lines:
            print("  " + line)


PIPELINE_MODES = ("never+pipeline", "interval+pipeline+buffer")


@pytest.mark.timeout(600)
def test_sigkill_under_load_pipelined(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """80 kills of writers whose batches are compressed off the appending thread
    (``compression_threads``, zstd): killed with batches still queued, the log is a prefix
    of whole batches holding every acknowledged (synced) record."""
    pytest.importorskip("backports.zstd" if sys.version_info < (3, 14) else "compression.zstd")
    seed = 0x5E6_3A3
    started = time.perf_counter()
    lines = []
    for m, mode in enumerate(PIPELINE_MODES):
        tally = run_kills(
            tmp_path / "pipeline", mode, kills=V2_KILLS, seed=seed + m, coding=CODINGS["zstd"]
        )
        assert tally.max_acked > 0, f"zstd sync={mode}: no append was ever acknowledged"
        assert tally.kills == V2_KILLS
        lines.append(tally.line(f"zstd sync={mode}"))
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nSIGKILL test (pipelined compression), seed {seed:#x}, {elapsed:.1f}s")
        for line in lines:
            print("  " + line)


# preallocate=True: zeros after the last frame, grown a step at a time and trimmed at the
# seal; alone and with zstd + encryption (docs/DURABILITY.md, "Preallocation").
PREALLOC_CODINGS: dict[str, dict[str, object]] = {
    "prealloc": {"preallocate": True},
    "prealloc+zstd+aes": {
        "preallocate": True,
        "compression": "zstd",
        "encryption_key": bytes(range(32)),
    },
    # direct_io=True: O_DIRECT blocks, the partial last one rewritten with each write.
    "direct": {"direct_io": True},
    "direct+zstd+aes": {
        "direct_io": True,
        "compression": "zstd",
        "encryption_key": bytes(range(32)),
    },
}


@pytest.mark.timeout(600)
def test_sigkill_under_load_preallocated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """480 kills of writers of preallocated and of direct_io logs, plain and compressed +
    encrypted: the same promise, and every sealed segment on disk ends with its seal (its
    zeros trimmed)."""
    pytest.importorskip("backports.zstd" if sys.version_info < (3, 14) else "compression.zstd")
    pytest.importorskip("cryptography")
    seed = 0x9E_A11C
    started = time.perf_counter()
    lines = []
    kills = during_open = 0
    for c, (name, coding) in enumerate(PREALLOC_CODINGS.items()):
        for m, mode in enumerate(V2_MODES):
            tally = run_kills(
                tmp_path / name, mode, kills=V2_KILLS, seed=seed + 16 * c + m, coding=coding
            )
            assert tally.max_acked > 0, f"{name} sync={mode}: no append was ever acknowledged"
            lines.append(tally.line(f"{name} sync={mode}"))
            kills += tally.kills
            during_open += tally.kills_during_open
    for name in PREALLOC_CODINGS:
        heads = [p.read_bytes()[8:12] for p in (tmp_path / name).rglob("*.wal")]
        assert heads and all(h[:2] == b"\x02\x00" and h[2] & 0x10 for h in heads), name
        for log in sorted(p for p in (tmp_path / name).iterdir() if p.is_dir()):
            report = segwal.verify(log)  # a sealed segment with zeros after its seal fails
            assert report.ok, (log, report.problems)
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nSIGKILL test (preallocated, direct I/O), seed {seed:#x}, {elapsed:.1f}s")
        for line in lines:
            print("  " + line)
    assert kills >= 480
    assert during_open > 0
