"""What an archive holds: its generations and segments, a generation's chain, and the full
check of every object (``segwal archive ls`` and ``segwal archive verify``).

One LIST of ``g/`` (paged by the store) and one small GET per generation record tell the
whole layout; segment contents are read only by a verify, a restore or a mirror, with a
HEAD (metadata) and a GET each, both checked against the seal.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from segwal.archive import dictobjects, keyobjects
from segwal.archive.objects import (
    ARCHIVE_KEY,
    GENERATIONS,
    Generation,
    SegmentFacts,
    chain_problem,
    check_segment,
    gen_key,
    metadata_problem,
    parse_archive,
    parse_gen,
    parse_gen_key,
    parse_segment_key,
    retrying,
)
from segwal.archive.store import ObjectStore
from segwal.errors import (
    ArchiveConflictError,
    ArchiveCorruptError,
    ArchiveError,
    ArchiveNotFoundError,
    ArchiveUnavailableError,
)


@dataclass(frozen=True, slots=True)
class ArchivedSegment:
    """One segment object as the listing shows it."""

    generation: str
    key: str
    first_lsn: int
    size: int


@dataclass(slots=True)
class Listing:
    """Every generation (oldest first) and its own segments (in LSN order)."""

    log_id: bytes | None
    generations: dict[str, Generation] = field(default_factory=dict)
    segments: dict[str, list[ArchivedSegment]] = field(default_factory=dict)
    # Generations with segments but no ``GEN`` record (deleted): their parent and fork LSN
    # are unknown, so their chain may silently lack the history before them.
    unrecorded: set[str] = field(default_factory=set)

    def first_lsn(self) -> int | None:
        """The lowest LSN any archived segment starts at (the archived log's start)."""
        starts = [s[0].first_lsn for s in self.segments.values() if s]
        return min(starts) if starts else None

    def unrecorded_problem(self, generation: str, *, asked: bool) -> str | None:
        """Why ``generation``'s chain cannot be trusted for lack of a ``GEN`` record: one
        of its generations has none (asked for by name, a generation whose chain starts
        at the archived log's first LSN is whole all the same)."""
        chain = self.chain(generation)
        missing = sorted(({s.generation for s in chain} | {generation}) & self.unrecorded)
        if not missing:
            return None
        if asked and missing == [generation] and chain and chain[0].first_lsn == self.first_lsn():
            return None
        return (
            f"generation record {gen_key(missing[0])} is missing: where generation "
            f"{missing[0]} forks (its parent and fork LSN) is unknown, so its history may "
            "be cut short"
        )

    def chain(self, generation: str) -> list[ArchivedSegment]:
        """The segments that make up ``generation``'s history, oldest first: its own and,
        up to its fork LSN, its parent's (recursively)."""
        parts: list[list[ArchivedSegment]] = []
        upto: int | None = None
        name: str | None = generation
        seen: set[str] = set()
        while name is not None and name not in seen:
            seen.add(name)
            gen = self.generations.get(name)
            own = self.segments.get(name, [])
            fork = gen.fork_lsn if gen is not None else 0
            parts.append(
                [s for s in own if s.first_lsn > fork and (upto is None or s.first_lsn <= upto)]
            )
            upto = fork
            name = gen.parent if gen is not None else None
        return [s for part in reversed(parts) for s in part]


@dataclass(slots=True)
class Fetcher:
    """Downloads and checks segment objects, with retries (counted)."""

    store: ObjectStore
    attempts: int = 6
    base_delay: float = 0.2
    retries: int = 0

    def _retry(self, _exc: ArchiveError) -> None:
        self.retries += 1

    def fetch(self, segment: ArchivedSegment) -> tuple[bytes, SegmentFacts]:
        """The object's bytes, checked: size and metadata (HEAD) against the bytes, the
        digest against the seal, the first LSN against the name."""
        data, facts, _metadata = self.fetch_with_metadata(segment)
        return data, facts

    def fetch_with_metadata(
        self, segment: ArchivedSegment
    ) -> tuple[bytes, SegmentFacts, dict[str, str]]:
        """As ``fetch``, with the object's metadata (``keys`` names an encrypted
        segment's key set)."""
        store, key = self.store, segment.key

        def head_and_get() -> tuple[bytes, dict[str, str]]:
            info = store.head(key)
            if info is None:
                raise ArchiveNotFoundError("the object is gone", url=store.url, key=key)
            data = store.get(key)
            if len(data) != info.size:  # a body ended early: retried like a cut connection
                raise ArchiveUnavailableError(
                    f"the body has {len(data)} bytes, the object {info.size} (cut short)",
                    url=store.url,
                    key=key,
                )
            return data, dict(info.metadata)

        data, metadata = retrying(
            head_and_get, attempts=self.attempts, base_delay=self.base_delay, on_retry=self._retry
        )
        facts = check_segment(data, key=key, url=store.url, first_lsn=segment.first_lsn)
        problem = metadata_problem(facts, metadata)
        if problem is not None:
            raise ArchiveCorruptError(
                problem, url=store.url, key=key, first_lsn=facts.first_lsn, last_lsn=facts.last_lsn
            )
        return data, facts, metadata

    def last_facts(self, segment: ArchivedSegment) -> dict[str, str]:
        """The metadata of an object (one HEAD), for choosing a generation."""
        store = self.store
        info = retrying(
            lambda: store.head(segment.key),
            attempts=self.attempts,
            base_delay=self.base_delay,
            on_retry=self._retry,
        )
        if info is None:
            raise ArchiveNotFoundError("the object is gone", url=store.url, key=segment.key)
        return dict(info.metadata)


def read_listing(store: ObjectStore, fetcher: Fetcher | None = None) -> Listing:
    """The archive's layout: one LIST of ``g/`` and a GET per generation record."""
    fetcher = fetcher or Fetcher(store)

    def get(key: str) -> bytes:
        return retrying(
            lambda: store.get(key),
            attempts=fetcher.attempts,
            base_delay=fetcher.base_delay,
            on_retry=fetcher._retry,
        )

    try:
        log_id: bytes | None = parse_archive(get(ARCHIVE_KEY), store.url)
    except ArchiveNotFoundError:
        log_id = None
    listing = Listing(log_id=log_id)
    infos = retrying(
        lambda: list(store.list(GENERATIONS)),
        attempts=fetcher.attempts,
        base_delay=fetcher.base_delay,
        on_retry=fetcher._retry,
    )
    for info in infos:
        seg = parse_segment_key(info.key)
        if seg is not None:
            listing.segments.setdefault(seg[0], []).append(
                ArchivedSegment(generation=seg[0], key=info.key, first_lsn=seg[1], size=info.size)
            )
            continue
        name = parse_gen_key(info.key)
        if name is not None:
            listing.generations[name] = parse_gen(name, get(gen_key(name)), store.url)
    for name in listing.segments:
        listing.segments[name].sort(key=lambda s: s.first_lsn)
        if name not in listing.generations:
            listing.unrecorded.add(name)
            listing.generations[name] = Generation(name=name, parent=None, fork_lsn=0)
    listing.generations = dict(sorted(listing.generations.items()))
    return listing


@dataclass(frozen=True, slots=True)
class ArchiveProblem:
    """One thing wrong in an archive: the object, the LSN range and the reason."""

    key: str
    first_lsn: int | None
    last_lsn: int | None
    reason: str
    kind: str  # corrupt, missing, conflict


@dataclass(slots=True)
class ArchiveReport:
    """What ``verify_archive`` checked and found."""

    url: str
    generations: int = 0
    objects: int = 0
    bytes: int = 0
    problems: list[ArchiveProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_archive(
    store: ObjectStore,
    *,
    parallel: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> ArchiveReport:
    """Read and check every segment object: size, metadata, seal digest, log id, the
    chain within each generation (a gap, an overlap, a broken previous digest), and, for an
    encrypted log, its key sets (digest, CRC, log id) and that each segment's key is in one."""
    fetcher = Fetcher(store)
    listing = read_listing(store, fetcher)
    report = ArchiveReport(url=store.url, generations=len(listing.generations))
    every = [s for name in listing.generations for s in listing.segments.get(name, [])]

    def check(segment: ArchivedSegment) -> SegmentFacts | ArchiveProblem:
        try:
            _data, facts = fetcher.fetch(segment)
        except ArchiveCorruptError as exc:
            return ArchiveProblem(segment.key, exc.first_lsn, exc.last_lsn, exc.reason, "corrupt")
        except ArchiveNotFoundError:
            return ArchiveProblem(segment.key, segment.first_lsn, None, "missing", "missing")
        return facts

    results: dict[str, SegmentFacts] = {}
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        for done, (segment, found) in enumerate(zip(every, pool.map(check, every), strict=True)):
            if progress is not None:
                progress(done + 1, len(every))
            if isinstance(found, ArchiveProblem):
                report.problems.append(found)
                continue
            report.objects += 1
            report.bytes += found.size
            if listing.log_id is not None and found.header.log_id != listing.log_id:
                report.problems.append(
                    ArchiveProblem(
                        segment.key,
                        found.first_lsn,
                        found.last_lsn,
                        "the segment belongs to another log (log id)",
                        "conflict",
                    )
                )
            results[segment.key] = found
    for name, gen in listing.generations.items():
        if name in listing.unrecorded:
            report.problems.append(
                ArchiveProblem(
                    gen_key(name),
                    None,
                    None,
                    f"generation record missing: generation {name} has segments but "
                    "no GEN (its parent and fork LSN are unknown)",
                    "missing",
                )
            )
        report.problems.extend(_chain_problems(listing, name, gen, results))
    report.problems.extend(_key_problems(store, listing, every, results))
    report.problems.extend(_dictionary_problems(store, every, results))
    return report


def _key_problems(
    store: ObjectStore,
    listing: Listing,
    every: list[ArchivedSegment],
    results: dict[str, SegmentFacts],
) -> Iterator[ArchiveProblem]:
    """Every key set (``keys/``) readable and of this log, and every encrypted segment's
    log key in one of them. No key-encryption key is needed: nothing is unwrapped."""
    keysets, bad = keyobjects.list_keys(store, log_id=listing.log_id)
    for exc in bad:
        yield ArchiveProblem(exc.key or keyobjects.KEYS_PREFIX, None, None, exc.reason, "corrupt")
    held = {key_id for keyset in keysets for key_id in keyset.key_ids}
    for segment in every:
        found = results.get(segment.key)
        if found is not None and found.header.key_id and found.header.key_id not in held:
            yield ArchiveProblem(
                segment.key,
                found.first_lsn,
                found.last_lsn,
                f"encrypted under log key {found.header.key_id}, which no key set in the "
                "archive holds",
                "missing",
            )


def _dictionary_problems(
    store: ObjectStore, every: list[ArchivedSegment], results: dict[str, SegmentFacts]
) -> Iterator[ArchiveProblem]:
    """Every ``dicts/`` object whole and alone with its id, and every dictionary a segment
    names archived."""
    needed: dict[int, str] = {}
    for segment in every:
        found = results.get(segment.key)
        if found is not None and found.header.dict_id:
            needed.setdefault(found.header.dict_id, segment.key)
    for key, reason in dictobjects.problems(store, needed):
        kind = "missing" if key in needed.values() else "corrupt"
        yield ArchiveProblem(key, None, None, reason, kind)


def _chain_problems(
    listing: Listing, name: str, gen: Generation, results: dict[str, SegmentFacts]
) -> Iterator[ArchiveProblem]:
    own = listing.segments.get(name, [])
    inherited = [s for s in listing.chain(name) if s.generation != name]
    # (with nothing inherited left, archive retention removed the start of the history)
    if own and own[0].first_lsn != gen.fork_lsn + 1 and inherited:
        yield ArchiveProblem(
            own[0].key,
            gen.fork_lsn + 1,
            own[0].first_lsn - 1,
            f"gap: generation {name} forks from {gen.parent} at LSN {gen.fork_lsn} but its "
            f"first segment starts at LSN {own[0].first_lsn}",
            "missing",
        )
    if gen.parent is not None and gen.parent not in listing.generations:
        yield ArchiveProblem(
            gen_key(name), None, gen.fork_lsn, f"parent generation {gen.parent} is gone", "missing"
        )
    for prev, nxt in itertools.pairwise(own):
        a, b = results.get(prev.key), results.get(nxt.key)
        if a is None or b is None:
            continue
        problem = chain_problem(a, b)
        if problem is not None:
            kind = "conflict" if problem.startswith("overlap") else "corrupt"
            yield ArchiveProblem(nxt.key, b.first_lsn, b.last_lsn, problem, kind)


def conflict_or_corrupt(problem: str, **where: object) -> ArchiveError:
    """The typed error for a chain problem: an overlap is a conflict, the rest damage."""
    if problem.startswith("overlap"):
        return ArchiveConflictError(problem, url=where.get("url"), key=where.get("key"))  # type: ignore[arg-type]
    return ArchiveCorruptError(problem, **where)  # type: ignore[arg-type]
