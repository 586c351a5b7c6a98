#!/usr/bin/env python3
"""Object-store throughput: segwal's S3 store against the same client's plain calls.

Uploads N segment-sized files and downloads them again, on a throwaway Ceph RGW started
here (``tests/cephlib.py``; plain HTTP and TLS), in one run. Rows:

- ``store.put_if_absent``: what the archive's uploader does per segment: read the file,
  one single-part PUT with ``If-None-Match: *``, ``Content-MD5`` and metadata;
- ``client.put_object``: the same client's bare PUT of the same bytes (no condition, no
  checksum): the floor for one request per segment;
- ``client.upload_file``: boto3's transfer manager, what ``aws s3 cp`` does (multipart with
  concurrent parts above 8 MiB): the floor of the ``aws s3 cp`` kind;
- ``store.get`` and ``client.download_file``: the restore side.
- ``local put_if_absent``: the ``file://`` store (fsynced) on the same disk, for scale.

Each row is a fresh bucket (or directory), sequential requests, median of ``--repeat``;
the order of the rows rotates between repetitions (the server slows as RAM fills).

    python benchmarks/bench_archive.py                     # 16 x 64 MiB segments
    python benchmarks/bench_archive.py --segments 500 --segment-mib 0.0625   # many small
    python benchmarks/bench_archive.py --quick

Needs Ceph (``apt-get install -y --no-install-recommends radosgw ceph-mon ceph-osd``)
and boto3 (``pip install 'segwal[s3]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
try:
    import segwal  # noqa: F401
except ImportError:  # running from a checkout without an installed segwal
    sys.path.insert(0, str(ROOT / "src"))

import cephlib  # noqa: E402
from segwal.archive.local import LocalStore  # noqa: E402
from segwal.archive.s3 import S3Store  # noqa: E402


def timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run(
    cluster: cephlib.Cluster, files: list[Path], repeat: int, work: Path
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for tls in (False, True):
        rows += run_endpoint(cluster, tls, files, repeat, work)
    total = sum(path.stat().st_size for path in files)
    samples = []
    for _ in range(repeat):
        local = LocalStore(work / f"local-{uuid.uuid4().hex[:8]}")
        samples.append(timed(lambda: put_all(local, files)))  # noqa: B023
    rows.append(row("file:// local put_if_absent (fsync)", samples, len(files), total))
    return rows


def put_all(store: Any, files: list[Path]) -> None:
    for path in files:
        meta = {"first-lsn": "1", "last-lsn": "2", "digest": "0" * 64}
        assert store.put_if_absent(path.name, path.read_bytes(), meta)


def run_endpoint(
    cluster: cephlib.Cluster, tls: bool, files: list[Path], repeat: int, work: Path
) -> list[dict[str, Any]]:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    total = sum(path.stat().st_size for path in files)
    rows: list[dict[str, Any]] = []
    endpoint = cluster.https if tls else cluster.http
    options = {
        "endpoint_url": endpoint,
        "access_key_id": cluster.access_key,
        "secret_access_key": cluster.secret_key,
        "region": cluster.region,
        "ca_bundle": cluster.ca_bundle if tls else None,
    }
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
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
    transfer = TransferConfig()  # boto3's (and aws s3 cp's) defaults

    stores: dict[str, S3Store] = {}  # made before the clock starts, like `client`

    def bucket() -> str:
        name = f"bench-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=name)
        stores[name] = S3Store(name, "", **options)
        return name

    def empty(name: str) -> None:
        for path in files:
            client.delete_object(Bucket=name, Key=path.name)
        client.delete_bucket(Bucket=name)
        stores.pop(name).close()

    def store_put(name: str) -> None:
        put_all(stores[name], files)

    def client_put(name: str) -> None:
        for path in files:
            client.put_object(Bucket=name, Key=path.name, Body=path.read_bytes())

    def client_upload(name: str) -> None:
        for path in files:
            client.upload_file(str(path), name, path.name, Config=transfer)

    def store_get(name: str) -> None:
        for path in files:
            (work / "down").write_bytes(stores[name].get(path.name))

    def client_download(name: str) -> None:
        for path in files:
            client.download_file(name, path.name, str(work / "down"), Config=transfer)

    scheme = "https" if tls else "http"
    plans: list[tuple[str, Callable[[str], None], str, Callable[[str], None] | None]] = [
        ("store.put_if_absent", store_put, "store.get", store_get),
        ("client.put_object", client_put, "", None),
        (
            "client.upload_file (aws s3 cp)",
            client_upload,
            "client.download_file (aws s3 cp)",
            client_download,
        ),
    ]
    samples: dict[str, list[float]] = {}
    for rep in range(repeat):
        # Rotate the order each repetition: the server slows as its memory store fills.
        for label, upload, read_label, download in plans[rep % 3 :] + plans[: rep % 3]:
            name = bucket()
            samples.setdefault(label, []).append(timed(lambda: upload(name)))  # noqa: B023
            if download is not None:
                samples.setdefault(read_label, []).append(timed(lambda: download(name)))  # noqa: B023
            empty(name)
    for label, _, read_label, download in plans:
        rows.append(row(f"{scheme} {label}", samples[label], len(files), total))
        if download is not None:
            rows.append(row(f"{scheme} {read_label}", samples[read_label], len(files), total))
    client.close()
    return rows


def row(label: str, samples: list[float], count: int, total: int) -> dict[str, Any]:
    seconds = statistics.median(samples)
    return {
        "row": label,
        "seconds": round(seconds, 4),
        "MB/s": round(total / seconds / 1e6, 1),
        "objects/s": round(count / seconds, 1),
        "samples": [round(s, 4) for s in samples],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=16)
    parser.add_argument("--segment-mib", type=float, default=64.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="8 x 4 MiB, 3 repetitions")
    parser.add_argument("--dir", default="/var/tmp", help="where files and Ceph go")
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.quick:
        args.segments, args.segment_mib = 8, 4.0
    if absent := cephlib.missing():
        print(f"needs Ceph: {', '.join(absent)} missing ({cephlib.INSTALL_HINT})", file=sys.stderr)
        return 2
    size = int(args.segment_mib * 2**20)
    with tempfile.TemporaryDirectory(prefix="segwal-bench-archive-", dir=args.dir) as tmp:
        work = Path(tmp)
        files = []
        for i in range(args.segments):
            path = work / f"{i * 1000 + 1:020d}.wal"
            path.write_bytes(os.urandom(size))
            files.append(path)
        cluster = cephlib.start(work / "ceph", memstore_bytes=max(4 << 30, 3 * size * len(files)))
        try:
            rows = run(cluster, files, args.repeat, work)
        finally:
            cephlib.stop(cluster)
    print(
        f"{args.segments} objects of {size / 2**20:g} MiB, median of {args.repeat}, "
        f"Ceph RGW (memstore) on 127.0.0.1, {os.cpu_count()} cores"
    )
    print(f"| {'row':<45} | {'MB/s':>8} | {'objects/s':>9} |")
    print(f"|{'-' * 47}|{'-' * 10}|{'-' * 11}|")
    for r in rows:
        print(f"| {r['row']:<45} | {r['MB/s']:>8} | {r['objects/s']:>9} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
