#!/usr/bin/env python3
"""Archive throughput of a whole log, restore throughput, and follower lag, on Ceph RGW.

Rows, in one run on a throwaway Ceph (``tests/cephlib.py``), plain HTTP and TLS:

- ``archive (uploader)``: a log of N sealed segments archived by ``segwal archive push``'s
  code path (read, re-check the seal digest, conditional PUT, the hold in META, fsynced);
- ``client.upload_file (aws s3 cp)``: the same segment files through the same boto3
  client's transfer manager, sequentially: the floor;
- with ``--encrypted``, the same rows for an encrypted log (its key set uploaded before the
  first segment; restore writes it as KEYS and needs no key);
- ``restore``: ``segwal.restore`` of that archive (4 parallel downloads, every object
  checked, renamed into place) and ``client.download_file`` of the same keys, sequentially.

Then the follower's lag: a writer with ``archive=`` appends one record every
``--interval`` seconds; a follower runs ``segwal.mirror(follow=True)``; for every record,
the time from ``append`` to its appearance in the mirror (p50, p90, max). At the defaults
(``--age 60 --poll 10``) that takes minutes; ``--age``/``--poll`` scale it.

    python benchmarks/bench_archive_log.py --segments 32 --segment-mib 4
    python benchmarks/bench_archive_log.py --lag-seconds 180 --age 60 --poll 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import cephlib  # noqa: E402
import segwal  # noqa: E402


def options(cluster: cephlib.Cluster, tls: bool) -> dict[str, Any]:
    return {
        "endpoint_url": cluster.https if tls else cluster.http,
        "access_key_id": cluster.access_key,
        "secret_access_key": cluster.secret_key,
        "region": cluster.region,
        "ca_bundle": cluster.ca_bundle if tls else None,
    }


def client_for(cluster: cephlib.Cluster, tls: bool) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=cluster.https if tls else cluster.http,
        aws_access_key_id=cluster.access_key,
        aws_secret_access_key=cluster.secret_key,
        region_name=cluster.region,
        verify=cluster.ca_bundle if tls else None,
        config=Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
        ),
    )


KEK = bytes(range(32))  # --encrypted: the logs' key-encryption key


def make_log(path: Path, segments: int, segment_bytes: int, encrypted: bool) -> list[Path]:
    record = os.urandom(64 * 1024)
    key = {"encryption_key": KEK} if encrypted else {}
    with segwal.open(path, segment_bytes=segment_bytes, sync="never", **key) as wal:  # type: ignore[arg-type]
        while len([s for s in wal.segments() if s.sealed]) < segments:
            wal.append(record)
        wal.rotate()
        return [Path(s.path) for s in wal.segments() if s.sealed][:segments]


def throughput(
    cluster: cephlib.Cluster, tls: bool, work: Path, segments: int, size: int, encrypted: bool
) -> None:
    from segwal.archive.s3 import S3Store

    scheme = ("https" if tls else "http") + (" encrypted" if encrypted else "")
    client = client_for(cluster, tls)
    log = work / f"log-{scheme.replace(' ', '-')}"
    files = make_log(log, segments, size, encrypted)
    total = sum(p.stat().st_size for p in files)
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    store = S3Store(bucket, "log", **options(cluster, tls))
    start = time.perf_counter()
    status = segwal.push(log, store)
    up = time.perf_counter() - start
    assert status.archived_lsn >= 1, status
    floor_bucket = f"floor-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=floor_bucket)
    start = time.perf_counter()
    for path in files:
        client.upload_file(str(path), floor_bucket, path.name)
    floor_up = time.perf_counter() - start
    start = time.perf_counter()
    result = segwal.restore(store, work / f"restored-{scheme.replace(' ', '-')}")
    down = time.perf_counter() - start
    start = time.perf_counter()
    for path in files:
        client.download_file(floor_bucket, path.name, str(work / "down"))
    floor_down = time.perf_counter() - start
    mb = total / 1e6
    rows = [
        ("archive (uploader, sequential)", up, status.uploads),
        ("client.upload_file (aws s3 cp)", floor_up, len(files)),
        ("restore (4 parallel, checked)", down, result.segments),
        ("client.download_file (sequential)", floor_down, len(files)),
    ]
    for label, seconds, count in rows:
        print(
            f"| {scheme + ' ' + label:<52} | {mb / seconds:8.1f} | {count / seconds:9.2f} |",
            flush=True,
        )
    store.close()
    client.close()


def lag(
    cluster: cephlib.Cluster, work: Path, seconds: float, age: float, poll: float, interval: float
) -> None:
    client = client_for(cluster, False)
    bucket = f"lag-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/log"
    opts = options(cluster, False)
    appended: dict[int, float] = {}
    seen: dict[int, float] = {}
    stop = threading.Event()
    with segwal.open(
        work / "lag-log", archive=url, archive_options=opts, archive_max_segment_age=age
    ) as wal:
        wal.append(b"first")
        wal.rotate()
        assert wal.wait_archived(1, timeout=60)

        def on_update(result: segwal.MirrorResult) -> None:
            now = time.monotonic()
            for lsn in range(1, result.last_lsn + 1):
                seen.setdefault(lsn, now)

        follower = threading.Thread(
            target=lambda: segwal.mirror(
                url,
                work / "lag-mirror",
                follow=True,
                poll_interval=poll,
                archive_options=opts,
                stop=stop.is_set,
                on_update=on_update,
            )
        )
        follower.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            appended[wal.append(b"tick")] = time.monotonic()
            time.sleep(interval)
        last = wal.last_lsn
        while last not in seen and time.monotonic() < deadline + age + poll + 30:
            time.sleep(0.1)
        stop.set()
        follower.join()
    lags = sorted(seen[n] - t for n, t in appended.items() if n in seen)
    if not lags:
        print("no record reached the follower", flush=True)
        return
    q = statistics.quantiles(lags, n=10)
    print(
        f"follower lag (age {age:g} s, poll {poll:g} s, a record every {interval:g} s, "
        f"{len(lags)} records): p50 {statistics.median(lags):.1f} s, p90 {q[8]:.1f} s, "
        f"max {lags[-1]:.1f} s",
        flush=True,
    )
    client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=32)
    parser.add_argument("--segment-mib", type=float, default=4.0)
    parser.add_argument("--lag-seconds", type=float, default=60.0, help="0: skip the lag run")
    parser.add_argument("--age", type=float, default=60.0, help="archive_max_segment_age")
    parser.add_argument("--poll", type=float, default=10.0, help="the follower's poll interval")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between appends")
    parser.add_argument("--dir", default="/var/tmp")
    parser.add_argument(
        "--encrypted",
        action="store_true",
        help="also encrypted logs (AES-256-GCM): their key set goes up first, restore needs no key",
    )
    args = parser.parse_args()
    if absent := cephlib.missing():
        print(f"needs Ceph: {', '.join(absent)} missing ({cephlib.INSTALL_HINT})", file=sys.stderr)
        return 2
    size = int(args.segment_mib * 2**20)
    with tempfile.TemporaryDirectory(prefix="segwal-bench-archive-log-", dir=args.dir) as tmp:
        work = Path(tmp)
        cluster = cephlib.start(
            work / "ceph", memstore_bytes=max(4 << 30, 6 * size * args.segments)
        )
        try:
            print(f"{args.segments} segments of {args.segment_mib:g} MiB, Ceph RGW (memstore)")
            print(f"| {'row':<52} | {'MB/s':>8} | {'segs/s':>9} |")
            print(f"|{'-' * 54}|{'-' * 10}|{'-' * 11}|")
            for encrypted in (False, True) if args.encrypted else (False,):
                for tls in (False, True):
                    throughput(cluster, tls, work, args.segments, size, encrypted)
            if args.lag_seconds > 0:
                lag(cluster, work, args.lag_seconds, args.age, args.poll, args.interval)
        finally:
            cephlib.stop(cluster)
    return 0


if __name__ == "__main__":
    sys.exit(main())
