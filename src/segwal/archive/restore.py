"""Restore: rebuild a log from the archive, to the newest record, an LSN or a time.

Steps (docs/DURABILITY.md, "Archive"), all in ``<parent>/.<name>.restore`` beside the
target, so the target is either absent/empty or a whole log:

1. refuse a target that exists and is not an empty directory (nothing is written);
2. record the request in ``RESTORE.plan`` (a rerun with other parameters is refused);
3. pick the generation: the one asked for, else the newest whose history holds the point;
4. download its chain with bounded parallelism and retries, each object checked (size,
   metadata, digest against its seal, first LSN against its name) and written as
   ``*.wal.tmp``, fsynced, renamed to ``*.wal``: a rerun keeps what is already there;
5. check the chain (log id, no gap, no overlap, each previous digest), write META (the log
   starts at the first restored LSN), fsync the directory;
6. open the result as a log: its recovery checks every segment again, ``truncate_after``
   cuts at the requested LSN (the log's own crash-safe rewind), the ``archive`` hold and
   ``ARCHIVE.state`` say the next upload starts a new generation forked from this one;
7. rename the directory into place and fsync the parent (the rename survives a crash).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from segwal.archive import dictobjects, keyobjects
from segwal.archive.catalog import (
    ArchivedSegment,
    Fetcher,
    Listing,
    conflict_or_corrupt,
    read_listing,
)
from segwal.archive.objects import SegmentFacts, chain_problem, check_segment
from segwal.archive.state import UploadState, store_state, sync_dir, write_atomic, write_whole
from segwal.archive.store import ObjectStore
from segwal.errors import (
    ArchiveCorruptError,
    ArchiveNotFoundError,
    ConfigError,
    MissingKeyError,
    RestoreTargetError,
)
from segwal.format.meta import Meta
from segwal.format.meta import encode as encode_meta
from segwal.format.naming import (
    KEYS_NAME,
    META_NAME,
    RESTORE_PLAN_NAME,
    Kind,
    parse,
    segment_name,
)
from segwal.log.config import WalConfig
from segwal.log.encryption import Encryption, KeyProvider
from segwal.log.wal import Wal

PLAN_NAME = RESTORE_PLAN_NAME


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreResult:
    """What a restore built."""

    path: str
    url: str
    generation: str
    reason: str  # why this generation
    first_lsn: int
    last_lsn: int
    segments: int
    bytes: int
    downloaded: int  # segments fetched by this run (the rest were kept from an earlier one)
    retries: int


@dataclass(frozen=True, slots=True)
class Choice:
    generation: str
    reason: str
    chain: list[ArchivedSegment]


def check_target(directory: str) -> None:
    if os.path.lexists(directory) and (
        not os.path.isdir(directory) or os.path.islink(directory) or os.listdir(directory)
    ):
        raise RestoreTargetError(
            "the restore target exists and is not an empty directory", path=directory
        )


def choose(
    listing: Listing,
    fetcher: Fetcher,
    *,
    to_lsn: int | None,
    to_time_us: int | None,
    generation: str | None,
) -> Choice:
    """The generation to restore and why: the one asked for, else the newest whose history
    holds the point (one HEAD per generation looked at)."""
    url = fetcher.store.url
    names = [generation] if generation is not None else list(reversed(listing.generations))
    if generation is not None and generation not in listing.generations:
        raise ArchiveNotFoundError(f"no generation {generation}", url=url)
    point = (
        f"LSN {to_lsn}"
        if to_lsn is not None
        else f"time {to_time_us} us"
        if to_time_us is not None
        else "the newest record"
    )
    skipped = []
    for name in names:
        chain = listing.chain(name)
        if not chain:
            skipped.append(f"{name} holds no segment")
            continue
        problem = listing.unrecorded_problem(name, asked=generation is not None)
        if problem is not None:
            raise ArchiveCorruptError(problem, url=url, key=chain[-1].key)
        last = fetcher.last_facts(chain[-1])
        first = fetcher.last_facts(chain[0]) if to_time_us is not None else {}
        last_lsn = int(last.get("last-lsn", "-1"))
        if to_lsn is not None and not chain[0].first_lsn <= to_lsn <= last_lsn:
            skipped.append(f"{name} holds LSNs {chain[0].first_lsn}..{last_lsn}")
            continue
        if to_time_us is not None and not (int(first.get("min-ts", "0")) <= to_time_us):
            skipped.append(f"{name} starts after that time")
            continue
        if generation is not None:
            reason = f"generation {name} was asked for"
        else:
            reason = (
                f"generation {name} is the newest of {len(listing.generations)} holding {point}"
            )
        if skipped:
            reason += f" (newer ones skipped: {'; '.join(skipped)})"
        return Choice(name, reason, chain)
    raise ArchiveNotFoundError(
        f"no generation holds {point}: {'; '.join(skipped) or 'the archive is empty'}", url=url
    )


def restore(
    store: ObjectStore,
    directory: str,
    *,
    to_lsn: int | None = None,
    to_time_us: int | None = None,
    generation: str | None = None,
    parallel: int = 4,
    attempts: int = 6,
    progress: Callable[[int, int, int], None] | None = None,
    encryption: bytes | KeyProvider | Encryption | None = None,
) -> RestoreResult:
    """Rebuild the log of ``store`` in ``directory`` (see the module for the steps).

    An encrypted log's key set (``keys/``) is written as ``KEYS`` before META; no key is
    needed to restore it whole or to a segment boundary (every object is still checked),
    and ``encryption`` (its key-encryption key) only to cut inside a segment."""
    if to_lsn is not None and to_time_us is not None:
        raise ConfigError("give to_lsn or to_time, not both", option="to_lsn")
    if not 1 <= parallel <= 64:
        raise ConfigError("parallel must be between 1 and 64", option="parallel")
    directory = os.path.abspath(directory)
    check_target(directory)
    parent, name = os.path.split(directory)
    work = os.path.join(parent, f".{name}.restore")
    os.makedirs(work, exist_ok=True)
    fetcher = Fetcher(store, attempts=attempts)
    listing = read_listing(store, fetcher)
    choice, plan_path = _pinned_choice(
        work, listing, fetcher, to_lsn=to_lsn, to_time_us=to_time_us, generation=generation
    )
    chain = choice.chain
    if to_lsn is not None:
        chain = [s for s in chain if s.first_lsn <= to_lsn]
    downloaded = 0
    if not os.path.exists(os.path.join(work, META_NAME)):
        _remove_strays(work, chain)
        facts, downloaded = _download(work, chain, fetcher, parallel, progress)
        # The whole downloaded chain is checked before a time cut drops its tail, so a
        # missing segment at the target is a gap, not a shorter restore.
        _check_chain(facts, listing, chain, store.url)
        if to_lsn is not None and facts[-1].last_lsn < to_lsn:
            raise ArchiveCorruptError(
                f"gap: LSNs {facts[-1].last_lsn + 1}..{to_lsn} are missing from generation "
                f"{choice.generation}",
                url=store.url,
                key=chain[-1].key,
                first_lsn=facts[-1].last_lsn + 1,
                last_lsn=to_lsn,
            )
        if to_time_us is not None:  # segments wholly after the time are not needed
            keep = [f for f in facts if f.min_ts <= to_time_us] or facts[:1]
            for gone in facts[len(keep) :]:
                os.unlink(os.path.join(work, segment_name(gone.first_lsn)))
            facts = keep
        needed = {f.header.key_id for f in facts if f.header.key_id}
        if needed:  # the wrapped keys, durable before META says the segments are a log
            keys = keyobjects.fetch_for(
                store,
                needed,
                log_id=listing.log_id or facts[0].header.log_id,
                where=f"generation {choice.generation}",
            )
            keyobjects.install(work, keys.data)
        # Compression dictionaries the segments name, durable before META, like KEYS.
        for dict_id in sorted({f.header.dict_id for f in facts if f.header.dict_id}):
            where = f"generation {choice.generation}"
            dictobjects.install(work, dictobjects.fetch(store, dict_id, where=where))
        write_atomic(work, META_NAME, encode_meta(Meta(first_lsn=facts[0].first_lsn)))
    if encryption is None and os.path.exists(os.path.join(work, KEYS_NAME)):
        return _finish_without_key(
            store, work, directory, plan_path, choice, downloaded, fetcher.retries,
            to_lsn=to_lsn, to_time_us=to_time_us,
        )  # fmt: skip
    wal = Wal(work, WalConfig(encryption=encryption))  # type: ignore[arg-type]
    try:
        cut = to_lsn
        if to_time_us is not None:
            cut = wal.lsn_at(to_time_us + 1) - 1
        if cut is not None and cut < wal.last_lsn:
            wal.truncate_after(max(cut, wal.first_lsn - 1))
        fork = wal.first_lsn - 1
        for info in wal.segments():
            if info.sealed and info.record_count:
                fork = info.last_lsn
        wal.hold("archive", fork + 1)
        _store_pending(work, store.url, choice.generation, fork, wal.rewinds)
        first, last = wal.first_lsn, wal.last_lsn
        segments = wal.segments()
    finally:
        wal.close()
    _into_place(work, directory, plan_path)
    return RestoreResult(
        path=directory,
        url=store.url,
        generation=choice.generation,
        reason=choice.reason,
        first_lsn=first,
        last_lsn=last,
        segments=sum(1 for s in segments if s.record_count),
        bytes=sum(s.size_bytes for s in segments),
        downloaded=downloaded,
        retries=fetcher.retries,
    )


def _store_pending(work: str, url: str, parent: str, fork: int, rewinds: int) -> None:
    """``ARCHIVE.state`` of a restored log: a generation still to be named, forked from the
    restored one at ``fork``, so its first upload starts a new generation."""
    store_state(
        work,
        UploadState(
            url=url,
            generation=None,
            parent=parent,
            fork_lsn=fork,
            in_flight=fork,
            rewinds=rewinds,
        ),
    )


def _into_place(work: str, directory: str, plan_path: str) -> None:
    os.unlink(plan_path)
    sync_dir(work)
    if os.path.isdir(directory):
        os.rmdir(directory)  # empty, checked above
    os.rename(work, directory)
    sync_dir(os.path.dirname(directory))


def _finish_without_key(
    store: ObjectStore,
    work: str,
    directory: str,
    plan_path: str,
    choice: Choice,
    downloaded: int,
    retries: int,
    *,
    to_lsn: int | None,
    to_time_us: int | None,
) -> RestoreResult:
    """Step 6 for an encrypted log restored without its key-encryption key: the log is
    not opened (that needs the key); the verified segments are the log, so META gets the
    ``archive`` hold directly. A cut inside a segment would rewrite it: MissingKeyError."""
    facts = []
    for name in sorted(
        (n for n in map(parse, os.listdir(work)) if n.kind is Kind.SEGMENT),
        key=lambda n: n.first_lsn,
    ):
        with open(os.path.join(work, name.name), "rb") as handle:
            facts.append(check_segment(handle.read(), key=name.name, url=store.url))
    last = facts[-1]
    if (to_lsn is not None and to_lsn < last.last_lsn) or (
        to_time_us is not None and last.max_ts > to_time_us
    ):
        raise MissingKeyError(
            "the cut falls inside an encrypted segment: rewriting it needs the "
            "key-encryption key (encryption=); restoring whole segments does not",
            path=work,
        )
    meta = Meta(first_lsn=facts[0].first_lsn, holds={"archive": last.last_lsn + 1})
    write_atomic(work, META_NAME, encode_meta(meta))
    _store_pending(work, store.url, choice.generation, last.last_lsn, 0)
    _into_place(work, directory, plan_path)
    return RestoreResult(
        path=directory,
        url=store.url,
        generation=choice.generation,
        reason=choice.reason,
        first_lsn=facts[0].first_lsn,
        last_lsn=last.last_lsn,
        segments=len(facts),
        bytes=sum(f.size for f in facts),
        downloaded=downloaded,
        retries=retries,
    )


def _pinned_choice(
    work: str,
    listing: Listing,
    fetcher: Fetcher,
    *,
    to_lsn: int | None,
    to_time_us: int | None,
    generation: str | None,
) -> tuple[Choice, str]:
    """The generation to restore, pinned in ``RESTORE.plan`` by the first run with its
    chain (keys and sizes): a rerun restores that same history (grown by segments archived
    since) or refuses, never a newer generation mixed with segments of the old one."""
    plan_path = os.path.join(work, PLAN_NAME)
    wanted = {
        "url": fetcher.store.url,
        "to_lsn": to_lsn,
        "to_time_us": to_time_us,
        "generation": generation,
    }
    if not os.path.exists(plan_path):
        choice = choose(
            listing, fetcher, to_lsn=to_lsn, to_time_us=to_time_us, generation=generation
        )
        pinned = {
            "request": wanted,
            "generation": choice.generation,
            "reason": choice.reason,
            "chain": [[s.key, s.first_lsn, s.size] for s in choice.chain],
        }
        write_atomic(work, PLAN_NAME, json.dumps(pinned, sort_keys=True).encode())
        return choice, plan_path
    with open(plan_path, "rb") as handle:
        try:
            plan = json.loads(handle.read())
        except ValueError:
            plan = None
    if not isinstance(plan, dict) or plan.get("request") != wanted:
        raise RestoreTargetError(
            "an unfinished restore with other parameters is there; rerun it as it "
            "was, or delete the directory",
            path=work,
        )
    name = plan["generation"]
    chain = listing.chain(name) if name in listing.generations else []
    # Segments archived since (the same generation growing) extend the history; any other
    # change (an object gone, replaced or pruned) means it is not the one pinned.
    pinned = plan["chain"]
    if [[s.key, s.first_lsn, s.size] for s in chain[: len(pinned)]] != pinned:
        raise RestoreTargetError(
            f"the archive changed since this unfinished restore of generation {name} "
            "began (its chain is not the one pinned in RESTORE.plan); delete the "
            "directory to restore again",
            path=work,
        )
    return Choice(name, plan["reason"], chain), plan_path


def _remove_strays(work: str, chain: list[ArchivedSegment]) -> None:
    """Segment files of another history (an earlier run of another plan) are not part of
    the log being built: they go before the directory is opened as one."""
    wanted = {segment_name(s.first_lsn) for s in chain}
    for entry in os.listdir(work):
        name = parse(entry)
        if name.kind is Kind.SEGMENT and entry not in wanted:
            os.unlink(os.path.join(work, entry))


def _download(
    work: str,
    chain: list[ArchivedSegment],
    fetcher: Fetcher,
    parallel: int,
    progress: Callable[[int, int, int], None] | None,
) -> tuple[list[SegmentFacts], int]:
    """Every segment of ``chain`` checked in ``work``; already-complete ones are kept."""
    if not chain:
        raise ArchiveNotFoundError("nothing to restore", url=fetcher.store.url)

    def one(segment: ArchivedSegment) -> tuple[SegmentFacts, bool]:
        path = os.path.join(work, segment_name(segment.first_lsn))
        if os.path.exists(path):
            with open(path, "rb") as handle:
                data = handle.read()
            try:
                kept = check_segment(
                    data, key=path, url=fetcher.store.url, first_lsn=segment.first_lsn
                )
            except ArchiveCorruptError:
                kept = None  # fetched again below
            # A whole segment of another history (an earlier run, a rewound archive) is
            # kept only when it is the very object the chain names: same size and digest.
            if kept is not None and kept.size == segment.size:
                metadata = fetcher.last_facts(segment)
                if metadata.get("digest") == kept.digest.hex():
                    return kept, False
        data, facts = fetcher.fetch(segment)
        name = segment_name(segment.first_lsn)
        # The bytes are on disk before the name says the file is complete.
        write_whole(work, name, data, temp_name=f"{name}.tmp")
        return facts, True

    results: list[SegmentFacts] = []
    fetched = total_bytes = 0
    pool = ThreadPoolExecutor(max_workers=parallel)
    try:
        for facts, new in pool.map(one, chain):
            results.append(facts)
            fetched += new
            total_bytes += facts.size
            if progress is not None:
                progress(len(results), len(chain), total_bytes)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # an interrupted restore stops soon
    sync_dir(work)
    return results, fetched


def _check_chain(
    facts: list[SegmentFacts], listing: Listing, chain: list[ArchivedSegment], url: str
) -> None:
    for index, found in enumerate(facts):
        if listing.log_id is not None and found.header.log_id != listing.log_id:
            raise ArchiveCorruptError(
                "the segment belongs to another log (log id)",
                url=url,
                key=chain[index].key,
                first_lsn=found.first_lsn,
                last_lsn=found.last_lsn,
            )
        if index:
            problem = chain_problem(facts[index - 1], found)
            if problem is not None:
                raise conflict_or_corrupt(
                    problem,
                    url=url,
                    key=chain[index].key,
                    first_lsn=found.first_lsn,
                    last_lsn=found.last_lsn,
                )
