"""Followers: a local read-only copy of an archived log, kept up to date.

The mirror directory is an ordinary log that no writer owns: META (where it starts), the
verified sealed segments in LSN order, and ``MIRROR.state`` (the URL and the generation
followed). ``segwal.open(dir, readonly=True)``, ``replay``, ``follow`` and cursors work on it
unchanged, on another machine.

Each segment is checked (size, metadata, seal digest, name) and chained to the one before
(log id, no gap, previous digest), written as ``*.wal.tmp``, fsynced, renamed, and the
directory fsynced: a reader sees whole segments only, in order, and a crash loses at most
the segment being written. The position is the newest local segment itself, so a restart
resumes exactly.

One poll is one LIST of ``g/`` starting after the key of the newest local segment: it
shows the generation's new segments and any newer generation (which sorts after). A newer
generation forked at or past the mirror's position is followed on; one forked below it
rewrote LSNs the mirror holds (``ArchiveDivergedError``), as does a first new segment that
does not start right after the mirror's last LSN (the archive was pruned past it).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from segwal.archive import dictobjects, keyobjects
from segwal.archive.catalog import ArchivedSegment, Fetcher, read_listing
from segwal.archive.objects import (
    GENERATIONS,
    SegmentFacts,
    chain_problem,
    check_segment,
    digest_of,
    gen_key,
    parse_gen,
    parse_gen_key,
    parse_segment_key,
    retrying,
    segment_key,
)
from segwal.archive.state import sync_dir, write_atomic, write_whole
from segwal.archive.store import ObjectStore
from segwal.errors import (
    ArchiveCorruptError,
    ArchiveDivergedError,
    ArchiveNotFoundError,
    RestoreTargetError,
)
from segwal.format.keys import decode as decode_keys
from segwal.format.meta import Meta
from segwal.format.meta import encode as encode_meta
from segwal.format.naming import META_NAME, MIRROR_STATE_NAME, Kind, parse, segment_name

STATE_NAME = MIRROR_STATE_NAME
DEFAULT_POLL_INTERVAL = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class MirrorResult:
    """Where a mirror stands after a pass (or when ``follow`` stops)."""

    path: str
    url: str
    generation: str
    first_lsn: int
    last_lsn: int
    added: int  # segments written by this call
    polls: int  # LIST requests made by this call


class Mirror:
    """One mirror directory following one archive (see the module)."""

    def __init__(self, store: ObjectStore, directory: str) -> None:
        self.store = store
        self.directory = directory
        self.fetcher = Fetcher(store)
        self.generation: str | None = None
        self.last: SegmentFacts | None = None
        self.first_lsn = 0
        self.added = 0
        self.polls = 0
        self._resumed = False  # whether a loaded position was checked against its fork
        self._load()

    def _load(self) -> None:
        directory = self.directory
        path = os.path.join(directory, STATE_NAME)
        if not os.path.isdir(directory) or not os.listdir(directory):
            return
        if not os.path.exists(path):
            raise RestoreTargetError("the directory is not empty and not a mirror", path=directory)
        with open(path, "rb") as handle:
            state = json.loads(handle.read(1 << 16))
        if state.get("url") != self.store.url:
            raise RestoreTargetError(
                f"the directory mirrors {state.get('url')}, not {self.store.url}", path=directory
            )
        self.generation = state["generation"]
        names = sorted(
            (n for n in map(parse, os.listdir(directory)) if n.kind is Kind.SEGMENT),
            key=lambda n: n.first_lsn,
        )
        if names:  # the newest local segment is the position (checked again)
            with open(os.path.join(directory, names[-1].name), "rb") as handle:
                data = handle.read()
            self.last = check_segment(data, key=names[-1].name, url=self.store.url)
            self.first_lsn = names[0].first_lsn
        else:
            self.generation = None  # nothing was written yet: start over

    def _save(self) -> None:
        body = json.dumps({"url": self.store.url, "generation": self.generation}).encode()
        write_atomic(self.directory, STATE_NAME, body)

    def start(self) -> None:
        """A new mirror: the newest generation, from the start of its history."""
        listing = read_listing(self.store, self.fetcher)
        names = [n for n in reversed(listing.generations) if listing.chain(n)]
        if not names:
            raise ArchiveNotFoundError("the archive holds no segment", url=self.store.url)
        self.generation = names[0]
        chain = listing.chain(self.generation)
        os.makedirs(self.directory, exist_ok=True)
        self._save()
        # META first: a log whose first segment is not LSN 1 needs it to say where it starts.
        write_atomic(self.directory, META_NAME, encode_meta(Meta(first_lsn=chain[0].first_lsn)))
        self.first_lsn = chain[0].first_lsn
        for segment in chain:
            self._add(segment)

    def poll(self) -> int:
        """One LIST; write the new segments. The number written."""
        if self.generation is None:
            self.start()
            return self.added
        assert self.last is not None
        if not self._resumed:
            self._resumed = True
            self._catch_up()
        start_after = segment_key(self.generation, self.last.first_lsn)
        self.polls += 1
        store = self.store
        infos = retrying(
            lambda: list(store.list(GENERATIONS, start_after=start_after)),
            attempts=self.fetcher.attempts,
            base_delay=self.fetcher.base_delay,
        )
        before = self.added
        for info in infos:
            seg = parse_segment_key(info.key)
            if seg is not None and seg[0] == self.generation:
                self._add(ArchivedSegment(seg[0], info.key, seg[1], info.size))
                continue
            newer = parse_gen_key(info.key)
            if newer is not None and newer > self.generation:
                self._switch(newer)
                return self.added - before + self.poll()
        return self.added - before

    def _catch_up(self) -> None:
        """A first pass over a forked generation interrupted in its parent's part: the
        mirror's last LSN is below the fork, so the rest of the chain (the parent's
        segments, then the child's) is copied before the child's own are listed."""
        assert self.generation is not None and self.last is not None
        store = self.store
        try:
            gen = parse_gen(self.generation, store.get(gen_key(self.generation)), store.url)
        except ArchiveNotFoundError:
            return
        if self.last.last_lsn >= gen.fork_lsn:
            return
        self.polls += 1
        for segment in read_listing(store, self.fetcher).chain(self.generation):
            self._add(segment)

    def _switch(self, newer: str) -> None:
        """Follow a newer generation if it continues the history the mirror holds."""
        assert self.last is not None
        store = self.store
        gen = parse_gen(newer, store.get(gen_key(newer)), store.url)
        if gen.fork_lsn < self.last.last_lsn:
            raise ArchiveDivergedError(
                f"generation {newer} rewrote LSNs from {gen.fork_lsn + 1} on, which this "
                f"mirror holds up to {self.last.last_lsn} (a rewind or a restore); mirror "
                "again into an empty directory",
                url=store.url,
                lsn=self.last.last_lsn + 1,
            )
        self.generation = newer
        self._save()

    def _add(self, segment: ArchivedSegment) -> None:
        last = self.last
        if last is not None and segment.first_lsn != last.last_lsn + 1:
            if segment.first_lsn <= last.last_lsn:
                return  # already here (a resumed start)
            raise ArchiveDivergedError(
                f"the archive no longer holds LSNs {last.last_lsn + 1}..{segment.first_lsn - 1} "
                "(pruned past this mirror)",
                url=self.store.url,
                lsn=last.last_lsn + 1,
            )
        data, facts, metadata = self.fetcher.fetch_with_metadata(segment)
        if last is not None:
            problem = chain_problem(last, facts)
            if problem is not None:
                raise ArchiveCorruptError(
                    problem,
                    url=self.store.url,
                    key=segment.key,
                    first_lsn=facts.first_lsn,
                    last_lsn=facts.last_lsn,
                )
        if facts.header.key_id:
            self._keys_for(segment, facts, metadata.get("keys"))
        dict_id = facts.header.dict_id
        if dict_id and not dictobjects.present(self.directory, dict_id):
            # Its compression dictionary, durable before the segment is written.
            fetched = dictobjects.fetch(self.store, facts.header.dict_id, where=segment.key)
            dictobjects.install(self.directory, fetched)
        name = segment_name(facts.first_lsn)
        write_whole(self.directory, name, data, temp_name=f"{name}.tmp")  # whole, then named
        sync_dir(self.directory)  # the name survives a crash before the next one is added
        self.last = facts
        self.added += 1

    def _keys_for(self, segment: ArchivedSegment, facts: SegmentFacts, named: str | None) -> None:
        """Make the local ``KEYS`` the key set the segment was uploaded with (its metadata
        names it; a rewrap or a new log key changes it), or else one holding its key id,
        durably before the segment is written: a reader never meets a segment whose key
        the mirror lacks."""
        local = keyobjects.read_local(self.directory)
        local_digest = None if local is None else digest_of(local).hex()
        key_id, log_id = facts.header.key_id, facts.header.log_id
        if named is not None and named == local_digest:
            return
        chosen = None
        if named is not None and keyobjects.parse_keys_key(keyobjects.keys_key(named)):
            try:
                chosen = keyobjects.load(self.store, keyobjects.keys_key(named), log_id=log_id)
            except ArchiveNotFoundError:
                chosen = None  # gone: any key set that holds the key will do
            if chosen is not None and key_id not in chosen.key_ids:
                chosen = None
        if chosen is None:
            if local is not None and key_id in {
                e.key_id for e in decode_keys(local, "KEYS").entries
            }:
                return
            chosen = keyobjects.fetch_for(
                self.store, {key_id}, log_id=log_id, where=f"segment {segment.key}"
            )
        keyobjects.install(self.directory, chosen.data)

    def result(self) -> MirrorResult:
        assert self.generation is not None and self.last is not None
        return MirrorResult(
            path=self.directory,
            url=self.store.url,
            generation=self.generation,
            first_lsn=self.first_lsn,
            last_lsn=self.last.last_lsn,
            added=self.added,
            polls=self.polls,
        )


def mirror(
    store: ObjectStore,
    directory: str,
    *,
    follow: bool = False,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    stop: Callable[[], bool] = lambda: False,
    on_update: Callable[[MirrorResult], None] | None = None,
) -> MirrorResult:
    """Bring ``directory`` up to date with the archive; with ``follow``, keep polling every
    ``poll_interval`` seconds until ``stop()`` is true."""
    copy = Mirror(store, os.path.abspath(directory))
    copy.poll()
    if on_update is not None:
        on_update(copy.result())
    while follow and not stop():
        deadline = time.monotonic() + poll_interval
        while not stop() and time.monotonic() < deadline:
            time.sleep(min(0.05, poll_interval))
        if stop():
            break
        if copy.poll() and on_update is not None:
            on_update(copy.result())
    return copy.result()
