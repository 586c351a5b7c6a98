"""Deep verification of a log directory: every frame, every checksum, every digest.

Unlike opening, verify reads every byte of every segment, recomputes each sealed segment's
BLAKE3 digest, and reports problems instead of raising on the first one. It never writes.
"""

from __future__ import annotations

import posixpath

from segwal.errors import SegmentHeaderError, UnsupportedFormatError
from segwal.format.layout import HEADER_SIZE
from segwal.format.naming import Kind, parse
from segwal.storage.fileio import FileSystem
from segwal.storage.recovery import (
    SegmentState,
    continuity_problem,
    scan_tail,
    scanned_state,
    written_after_durable,
)
from segwal.storage.segment import read_header
from segwal.types import Problem, SegmentCheck, VerifyReport


def verify_directory(fs: FileSystem, directory: str) -> VerifyReport:
    """Check every segment in ``directory``; the report says per segment clean or where not."""
    entries = [(parse(e.name), e.is_file) for e in fs.list_dir(directory)]
    names = sorted(
        (item for item in entries if item[0].kind is Kind.SEGMENT),
        key=lambda item: item[0].first_lsn,
    )
    problems: list[Problem] = []
    checks: list[SegmentCheck] = []
    prev: SegmentState | None = None
    records = 0
    for index, (name, is_file) in enumerate(names):
        path = posixpath.join(directory, name.name)
        last = index == len(names) - 1
        problem, state = _check(fs, path, name.first_lsn, is_file, last, prev)
        if problem is not None:
            problems.append(problem)
        if state is None:
            checks.append(
                SegmentCheck(
                    path=path,
                    first_lsn=name.first_lsn,
                    last_lsn=name.first_lsn - 1,
                    records=0,
                    sealed=False,
                    ok=False,
                    bad_offset=problem.offset if problem else 0,
                    reason=problem.reason if problem else "",
                )
            )
            prev = None
            continue
        count = state.last_lsn - state.header.first_lsn + 1
        records += count
        checks.append(
            SegmentCheck(
                path=path,
                first_lsn=state.header.first_lsn,
                last_lsn=state.last_lsn,
                records=count,
                sealed=state.seal is not None,
                ok=problem is None,
                bad_offset=None if problem is None else problem.offset,
                reason="" if problem is None else problem.reason,
            )
        )
        prev = state if state.seal is not None else None
    ok = not any(p.kind == "corruption" for p in problems)
    first = checks[0].first_lsn if checks else 1
    last_lsn = checks[-1].last_lsn if checks else 0
    return VerifyReport(
        ok=ok,
        problems=tuple(problems),
        segments=tuple(checks),
        records=records,
        first_lsn=first,
        last_lsn=last_lsn,
    )


def _check(
    fs: FileSystem,
    path: str,
    name_lsn: int,
    is_file: bool,
    last: bool,
    prev: SegmentState | None,
) -> tuple[Problem | None, SegmentState | None]:
    if not is_file:
        return Problem(path=path, offset=None, lsn=name_lsn, reason="not a regular file"), None
    handle = fs.open_read(path)
    try:
        size = handle.size()
        if size < HEADER_SIZE:
            reason = f"segment of {size} bytes is shorter than its header"
            return Problem(path=path, offset=0, lsn=name_lsn, reason=reason), None
        try:
            header = read_header(handle)
        except (SegmentHeaderError, UnsupportedFormatError) as exc:
            return Problem(path=path, offset=0, lsn=name_lsn, reason=str(exc)), None
        if header.first_lsn != name_lsn:
            reason = f"header says first LSN {header.first_lsn}, name says {name_lsn}"
            return Problem(path=path, offset=0, lsn=name_lsn, reason=reason), None
        scan = scan_tail(handle, header, size)
        state = scanned_state(path, header, size, scan)
        gap = continuity_problem(prev, header) if prev is not None else None
        if prev is not None and gap is not None:
            return Problem(path=path, offset=0, lsn=prev.last_lsn + 1, reason=gap), state
        if scan.damage_offset is not None:
            lsn = scan.last_lsn + 1
            torn = last and not written_after_durable(handle, header, scan.damage_offset, size, lsn)
            kind = "torn_tail" if torn else "corruption"
            problem = Problem(
                path=path, offset=scan.damage_offset, lsn=lsn, reason=scan.reason, kind=kind
            )
            return problem, state
        if scan.seal is None and not last:
            reason = "segment is not sealed but a later segment exists"
            return Problem(path=path, offset=size, lsn=scan.last_lsn + 1, reason=reason), state
        return None, state
    finally:
        handle.close()
