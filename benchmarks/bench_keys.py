#!/usr/bin/env python3
"""What key management costs: a nonce draw, a segment key's set-up (HKDF-SHA256, the AEAD
object, a salt and a nonce source), opening and closing a small log with and without
encryption (KEYS read and unwrapped, the fsyncs of an open), and a KEK rotation (KEYS
rewrapped and replaced with its two barriers).

    python benchmarks/bench_keys.py            # in a temporary directory
    python benchmarks/bench_keys.py --dir /var/tmp

Frame encryption itself (AES-GCM per batch) is measured by ``segwal bench``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import timeit

import segwal
from segwal.format.keyring import AES_256_GCM, KeyRing, LogKey, NonceSource


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=None, help="where the logs go (default: a temp dir)")
    parser.add_argument("--opens", type=int, default=200, help="open+close rounds per log")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="segwal-keys-", dir=args.dir)
    try:
        source = NonceSource()
        n = 200_000
        print(f"nonce draw                  {timeit.timeit(source, number=n) / n * 1e9:8.0f} ns")
        log_key = LogKey(key_id=1, cipher_id=AES_256_GCM, key=os.urandom(32), created_us=0)
        ring = KeyRing(bytes(16), [log_key], 1)
        t = timeit.timeit(lambda: ring.for_new_segment(bytes(16), 1, 1), number=2000)
        print(f"segment key set-up          {t / 2000 * 1e6:8.1f} us")
        kek = os.urandom(32)
        for name, options in (("plain", {}), ("encrypted", {"encryption_key": kek})):
            path = os.path.join(root, name)
            with segwal.open(path, **options) as wal:  # type: ignore[arg-type]
                wal.append_batch([b"x" * 100] * 100)
            start = time.perf_counter()
            for _ in range(args.opens):
                segwal.open(path, **options).close()  # type: ignore[arg-type]
            ms = (time.perf_counter() - start) / args.opens * 1e3
            print(f"open + close, {name:<10}    {ms:8.2f} ms")
        path = os.path.join(root, "encrypted")
        start = time.perf_counter()
        for _ in range(50):
            segwal.rotate_keys(path, kek, new_kek=kek)
        print(f"KEK rotation                {(time.perf_counter() - start) / 50 * 1e3:8.2f} ms")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
