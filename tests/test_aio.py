"""segwal.aio on a real asyncio loop and real files: shared fsyncs, per-caller failures,
cancellation, a follower woken without polling, threads that end with close(), and a
process that never closes its log but still exits."""

from __future__ import annotations

import asyncio
import gc
import random
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

import segwal
import segwal.aio
from segwal import ConfigError, InvalidPayloadError, ReadOnlyError, RecordTooLargeError


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("segwal-aio-writer")]


def test_a_thousand_concurrent_appends_share_a_few_fsyncs(wal_dir: str) -> None:
    async def main() -> None:
        async with segwal.aio.open(wal_dir) as wal:  # sync="always"
            before = wal.stats().fsyncs
            # Callers arrive over several loop iterations, not all at once.
            tasks = []
            for i in range(1000):
                tasks.append(asyncio.create_task(wal.append(b"record %d" % i)))
                if i % 50 == 49:
                    await asyncio.sleep(0)
            lsns = await asyncio.gather(*tasks)
            fsyncs = wal.stats().fsyncs - before
            print(
                f"\n1000 concurrent durable appends: {fsyncs} fdatasyncs, "
                f"{wal.writer_drains} writer drains"
            )
            assert sorted(lsns) == list(range(1, 1001))
            assert fsyncs < 100
            assert wal.durable_lsn == 1000
            by_lsn = {r.lsn: r.payload async for r in wal.replay()}
            assert [by_lsn[lsn] for lsn in lsns] == [b"record %d" % i for i in range(1000)]

    run(main())


def test_a_bad_payload_fails_only_its_caller(wal_dir: str) -> None:
    async def main() -> None:
        async with segwal.aio.open(wal_dir, max_record_bytes=64) as wal:
            calls = [
                wal.append(b"ok 1"),
                wal.append("text"),  # type: ignore[arg-type]
                wal.append_batch([b"ok 2", b"ok 3"], type=5),
                wal.append(b"x" * 65),
                wal.append(b"ok 4", type=1 << 20),
                wal.append(bytearray(b"ok 5")),
            ]
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert isinstance(results[1], InvalidPayloadError)
            assert isinstance(results[3], RecordTooLargeError)
            assert isinstance(results[4], ConfigError)
            good = [r for r in results if not isinstance(r, BaseException)]
            assert good == [1, range(2, 4), 4]
            records = [(r.lsn, r.type, r.payload) async for r in wal.replay()]
            assert records == [(1, 0, b"ok 1"), (2, 5, b"ok 2"), (3, 5, b"ok 3"), (4, 0, b"ok 5")]

    run(main())


def test_cancelled_appends_are_absent_or_whole_and_durable(wal_dir: str) -> None:
    rng = random.Random(7)

    async def main() -> set[int]:
        async with segwal.aio.open(wal_dir) as wal:
            tasks = {}
            for n in range(300):
                batch = [b"%d:%d" % (n, i) for i in range(5)]
                tasks[n] = asyncio.create_task(wal.append_batch(batch, type=n % 7))
                if n % 10 == 9:
                    await asyncio.sleep(rng.choice([0, 0, 0.0005, 0.002]))
                    for victim in rng.sample(range(n - 9, n + 1), 4):  # some are in flight
                        tasks[victim].cancel()
            done = await asyncio.gather(*tasks.values(), return_exceptions=True)
            cancelled = {
                n for n, r in zip(tasks, done, strict=True) if isinstance(r, BaseException)
            }
            assert all(isinstance(r, asyncio.CancelledError | range) for r in done)
            await wal.sync()
            assert wal.durable_lsn == wal.last_lsn  # whatever was written is durable
            return cancelled

    cancelled = run(main())
    assert cancelled  # the test cancelled something
    with segwal.open(wal_dir, readonly=True) as wal:
        seen: dict[int, list[bytes]] = {}
        for r in wal.replay():
            n = int(r.payload.split(b":")[0])
            assert r.type == n % 7
            seen.setdefault(n, []).append(r.payload)
    for n in range(300):
        if n in seen:
            assert seen[n] == [b"%d:%d" % (n, i) for i in range(5)]  # whole, in order
        else:
            assert n in cancelled  # only a cancelled append may be missing
    print(
        f"\ncancelled {len(cancelled)}: {len(cancelled - set(seen))} absent, "
        f"{len(cancelled & set(seen))} written anyway"
    )


def test_follow_is_woken_by_the_writer_without_polling(wal_dir: str) -> None:
    async def main() -> None:
        async with segwal.aio.open(wal_dir) as wal:
            await wal.append(b"first")
            reads = 0
            blocking = wal.wal
            original = blocking.read_batch

            def counting(*args: Any, **kwargs: Any) -> segwal.Batch:
                nonlocal reads
                reads += 1
                return original(*args, **kwargs)

            blocking.read_batch = counting  # type: ignore[method-assign]
            received: list[tuple[int, float]] = []

            async def follower() -> None:
                async for record in wal.follow(1):
                    received.append((record.lsn, time.perf_counter()))
                    if record.lsn == 201:
                        return

            task = asyncio.create_task(follower())
            await asyncio.sleep(0.3)  # idle: a polling follower would read ~15+ times
            assert [lsn for lsn, _ in received] == [1]
            assert reads <= 2, reads
            sent = {}
            for i in range(200):
                sent[wal.next_lsn] = time.perf_counter()
                await wal.append(b"r %d" % i)
                await asyncio.sleep(0.001)
            await asyncio.wait_for(task, 30)
            latencies = sorted(at - sent[lsn] for lsn, at in received[1:])
            assert len(latencies) == 200
            p50, p99 = latencies[100], latencies[197]
            print(
                f"\nfollow: append call to record seen by the follower: "
                f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms (includes the fdatasync)"
            )
            assert p99 < 5.0  # generous: woken, not waiting out a long sleep

    run(main())


def test_follow_ends_on_timeout_and_on_close(wal_dir: str) -> None:
    async def main() -> None:
        wal = await segwal.aio.open(wal_dir)
        await wal.append(b"a")
        got = [r.lsn async for r in wal.follow(1, timeout=0.05)]
        assert got == [1]

        async def forever() -> list[int]:
            return [r.lsn async for r in wal.follow(2)]

        task = asyncio.create_task(forever())
        await asyncio.sleep(0.05)
        await wal.close()
        assert await asyncio.wait_for(task, 5) == []

    run(main())


def test_reads_move_pages_and_cursors_work(wal_dir: str) -> None:
    async def main() -> None:
        async with segwal.aio.open(wal_dir, segment_bytes=4096) as wal:
            for chunk in range(5):
                await wal.append_batch([b"p%d" % i for i in range(chunk * 100, chunk * 100 + 100)])
            assert (await wal.read(7)).payload == b"p6"
            page = await wal.read_batch(1, max_records=100)
            assert len(page.records) == 100 and page.has_more
            got = [r.lsn async for r in wal.replay(10, 260, max_records=64)]
            assert got == list(range(10, 261))
            cursor = await wal.cursor("indexer")
            assert cursor.position == 1
            batch = await cursor.read_batch(max_records=10)
            await cursor.commit(batch.records[-1].lsn)
            assert cursor.position == 11
            assert await wal.cursors() == {"indexer": 11}
            nxt = [r.lsn async for r in cursor.follow(timeout=0.01)]
            assert nxt[0] == 11 and nxt[-1] == 500
            assert await cursor.delete()
            assert len(await wal.segments()) > 1

    run(main())


def test_a_readonly_log_follows_another_writer_by_polling(wal_dir: str) -> None:
    async def main() -> None:
        with segwal.open(wal_dir) as writer:
            writer.append(b"one")
            async with segwal.aio.open(wal_dir, readonly=True) as reader:
                with pytest.raises(ReadOnlyError):
                    await reader.append(b"no")

                async def follow() -> list[bytes]:
                    out = []
                    async for r in reader.follow(1, timeout=5):
                        out.append(r.payload)
                        if len(out) == 3:
                            break
                    return out

                task = asyncio.create_task(follow())
                await asyncio.sleep(0.05)
                await asyncio.to_thread(writer.append_batch, [b"two", b"three"])
                assert await asyncio.wait_for(task, 10) == [b"one", b"two", b"three"]

    run(main())


def test_no_thread_outlives_close(wal_dir: str) -> None:
    async def main() -> None:
        first = await segwal.aio.open(wal_dir + "1")
        second = await segwal.aio.open(wal_dir + "2")
        assert len(writer_threads()) == 2
        await asyncio.gather(first.append(b"a"), second.append(b"b"))
        await asyncio.gather(first.close(), second.close(), first.close())
        assert writer_threads() == []
        with pytest.raises(segwal.ClosedError):
            await first.append(b"late")

    run(main())
    assert writer_threads() == []


def test_a_closed_loop_is_skipped_and_the_writer_goes_on(wal_dir: str) -> None:
    holder: dict[str, segwal.aio.AsyncWal] = {}

    async def submit_and_leave() -> None:
        holder["wal"] = wal = await segwal.aio.open(wal_dir)
        for i in range(50):
            asyncio.create_task(wal.append(b"left %d" % i))  # noqa: RUF006
        await asyncio.sleep(0)  # the loop closes with the appends in flight

    run(submit_and_leave())
    wal = holder.pop("wal")

    async def later() -> None:
        assert await wal.append(b"after") >= 1
        await wal.close()

    run(later())  # a second loop uses the same log: its writer thread survived
    assert writer_threads() == []


def test_an_unclosed_log_warns_and_its_thread_closes_it(wal_dir: str) -> None:
    async def main() -> None:
        wal = await segwal.aio.open(wal_dir)
        await wal.append(b"a")

    with pytest.warns(ResourceWarning, match="never closed"):
        run(main())
        gc.collect()
    deadline = time.monotonic() + 10
    while writer_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer_threads() == []
    with segwal.open(wal_dir) as wal:  # the writer thread released the lock
        assert [r.payload for r in wal.replay()] == [b"a"]


def test_a_process_that_never_closes_its_log_exits_promptly(wal_dir: str) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, segwal.aio
        async def main():
            wal = await segwal.aio.open({wal_dir!r})
            await asyncio.gather(*(wal.append(b"r%d" % i) for i in range(100)))
            asyncio.get_running_loop().call_soon(lambda: None)
            print("appended", flush=True)
        asyncio.run(main())
        """
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "appended"
    print(f"\nunclosed-log process exited in {time.monotonic() - started:.2f} s")
    with segwal.open(wal_dir) as wal:
        assert wal.last_lsn == 100  # acknowledged appends were durable


def test_log_failure_reaches_every_caller(wal_dir: str) -> None:
    async def main() -> None:
        async with segwal.aio.open(wal_dir) as wal:
            await wal.append(b"a")
            await asyncio.to_thread(wal.wal.close)  # the log underneath goes away
            results = await asyncio.gather(
                wal.append(b"b"), wal.append(b"c"), return_exceptions=True
            )
            assert all(isinstance(r, segwal.ClosedError) for r in results)

    run(main())
