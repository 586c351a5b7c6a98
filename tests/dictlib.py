"""Shared by the dictionary tests: JSON-like small records (the kind a trained dictionary
helps) and dictionaries trained on them, made once per process (training takes ~0.1 s)."""

from __future__ import annotations

import functools
import json
import random

import segwal


def record(i: int, seed: int = 0) -> bytes:
    """A JSON-like record of about 100 bytes: the same keys, varying values."""
    rng = random.Random(i * 7919 + seed)
    return json.dumps(
        {
            "id": i,
            "user": f"user{rng.randrange(5000)}",
            "event": rng.choice(["click", "view", "purchase", "signup"]),
            "ts": 1_700_000_000 + i,
            "ok": rng.random() < 0.9,
        }
    ).encode()


@functools.cache
def trained(seed: int = 0, size: int = 4096) -> bytes:
    """A dictionary trained on 1000 records of ``seed``."""
    return segwal.train_dictionary([record(i, seed) for i in range(1000)], size)
