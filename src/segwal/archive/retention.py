"""Archive retention, in two phases: plan (a manifest naming the victims) and, after a
delay, delete.

Only the oldest segments of the newest generation's history (what a restore picks by
default) are candidates, oldest first, by age (``max_age``: every record older) or by size
(``max_bytes``: the history's total above it); the newest segment is never one. Older
generations are left alone (delete them by hand or with bucket lifecycle rules once their
history is no longer wanted).

A run first carries out every manifest whose delay has passed (its objects, then the
manifest), then, if the rules pick victims not already planned, creates
``prune/<not-before-us>.json`` with ``put_if_absent``. The delay is what protects a
restore or a mirror that listed those segments a moment ago: one running longer than the
delay can find an object gone and fails with a typed error (rerun it). A mirror whose next
segment was deleted gets ``ArchiveDivergedError``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from segwal.archive.catalog import Fetcher, read_listing
from segwal.archive.store import ObjectStore
from segwal.errors import ArchiveCorruptError, ConfigError

PRUNE_PREFIX = "prune/"


@dataclass(slots=True)
class PruneResult:
    """What a retention run planned and deleted."""

    url: str
    planned: list[str] = field(default_factory=list)  # objects in the new manifest
    deleted: list[str] = field(default_factory=list)  # objects deleted by this run
    not_before_us: int | None = None  # when the new manifest's objects may go
    pending: int = 0  # manifests still waiting for their delay


def prune_archive(
    store: ObjectStore,
    *,
    max_age: float | None = None,
    max_bytes: int | None = None,
    delay: float = 3600.0,
    now_us: int | None = None,
) -> PruneResult:
    """One retention run (see the module)."""
    if max_age is None and max_bytes is None:
        raise ConfigError("give max_age or max_bytes", option="max_age")
    if delay < 0:
        raise ConfigError("delay must be >= 0 seconds", option="delay")
    now = time.time_ns() // 1000 if now_us is None else now_us
    result = PruneResult(url=store.url)
    planned: set[str] = set()
    for info in list(store.list(PRUNE_PREFIX)):
        listed, not_before = _manifest(store, info.key)
        if not_before <= now:
            for key in listed:
                store.delete(key)
                result.deleted.append(key)
            store.delete(info.key)
        else:
            planned.update(listed)
            result.pending += 1
    fetcher = Fetcher(store)
    listing = read_listing(store, fetcher)
    if not listing.generations:
        return result
    newest = next(reversed(listing.generations))
    chain = [s for s in listing.chain(newest) if s.key not in result.deleted]
    total = sum(s.size for s in chain)
    victims: list[str] = []
    for segment in chain[:-1]:  # never the newest segment
        too_big = max_bytes is not None and total > max_bytes
        too_old = False
        if max_age is not None and not too_big:
            metadata = fetcher.last_facts(segment)
            too_old = int(metadata.get("max-ts", str(now))) < now - int(max_age * 1e6)
        if not (too_big or too_old):
            break
        total -= segment.size
        if segment.key not in planned:
            victims.append(segment.key)
    if victims:
        not_before = now + int(delay * 1e6)
        key = f"{PRUNE_PREFIX}{not_before:020d}.json"
        body = json.dumps({"not_before_us": not_before, "delete": victims}).encode()
        store.put_if_absent(key, body)
        result.planned = victims
        result.not_before_us = not_before
        result.pending += 1
    return result


def _manifest(store: ObjectStore, key: str) -> tuple[list[str], int]:
    try:
        raw = json.loads(store.get(key))
        victims = [str(k) for k in raw["delete"]]
        not_before = int(raw["not_before_us"])
    except (ValueError, KeyError, TypeError):
        raise ArchiveCorruptError("unreadable retention manifest", url=store.url, key=key) from None
    if any(not k.startswith("g/") for k in victims):
        raise ArchiveCorruptError(
            "a retention manifest names objects outside g/", url=store.url, key=key
        )
    return victims, not_before
