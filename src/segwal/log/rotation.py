"""Rotation: when the active segment is sealed, and the sealing itself.

A segment is sealed when the next batch would pass ``segment_bytes``, when it is older than
``max_segment_age``, when a record is larger than its header allows, or on ``rotate()``. The
seal and the next segment's creation run with every barrier held off, so no fdatasync ever
runs on a segment being sealed and closed.
"""

from __future__ import annotations

from collections.abc import Callable

from segwal.events import Rotated, Sealed
from segwal.format.layout import SEAL_SIZE
from segwal.log.catalog import segment_info
from segwal.log.state import LogState
from segwal.storage.index import save as save_index
from segwal.storage.recovery import SegmentState
from segwal.storage.segment import SegmentWriter
from segwal.types import SegmentInfo


class Rotation:
    """Decides and carries out the rotations of one writable log (under its lock)."""

    def __init__(self, state: LogState, after_seal: Callable[[], None]) -> None:
        self._state = state
        self._after_seal = after_seal  # retention, which the rotation that sealed applies

    def due(self, writer: SegmentWriter, frame_len: int, largest: int, ts: int) -> bool:
        if largest > writer.header.max_record_bytes:
            return True
        if writer.count == 0:
            return False
        if writer.offset + frame_len + SEAL_SIZE > self._state.config.segment_bytes:
            return True
        return self.aged(writer, ts)

    def aged(self, writer: SegmentWriter, now_us: int) -> bool:
        age = self._state.config.max_segment_age
        return age is not None and writer.count > 0 and now_us - writer.min_ts >= age * 1e6

    def for_append(
        self, writer: SegmentWriter, frame_len: int, largest: int, ts: int
    ) -> SegmentWriter:
        if largest > writer.header.max_record_bytes:
            reason = "limit"
        elif writer.offset + frame_len + SEAL_SIZE > self._state.config.segment_bytes:
            reason = "size"
        else:
            reason = "age"
        self.rotate_locked(reason)
        assert self._state.writer is not None
        return self._state.writer

    def rotate_locked(self, reason: str) -> SegmentInfo | None:
        """Seal the active segment and start the next (the caller holds the lock)."""
        state = self._state
        writer = state.writer
        assert writer is not None
        config = state.config
        if writer.count == 0 and reason != "limit":
            return None
        with state.commit.exclusive():
            try:
                if writer.count == 0:
                    # An empty segment whose header limit is too small is replaced in place.
                    sealed = None
                    sequence, prev = writer.header.sequence, writer.header.prev_digest
                else:
                    seal = writer.seal(config.now_us())
                    state.io["fsyncs"] += 1
                    state.io["written_bytes"] += SEAL_SIZE
                    sealed = SegmentState(
                        path=writer.path,
                        header=writer.header,
                        size=writer.offset,
                        end=seal.data_end,
                        last_lsn=seal.last_lsn,
                        min_ts=seal.min_ts,
                        max_ts=seal.max_ts,
                        seal=seal,
                        index=writer.index,
                    )
                    sequence, prev = writer.header.sequence + 1, seal.digest
                writer.close()
                if sealed is not None:
                    state.catalog.add_sealed(sealed)
                    state.commit.publish(sealed.last_lsn)
                state.writer = SegmentWriter.create(
                    state.fs,
                    state.path,
                    log_id=writer.header.log_id,
                    sequence=sequence,
                    first_lsn=writer.last_lsn + 1,
                    created_us=config.now_us(),
                    max_record_bytes=config.max_record_bytes,
                    prev_digest=prev,
                    coding=state.coding,
                )
            except BaseException as exc:
                state.fail(exc)
                writer.discard_unsynced()
                raise
        io = state.io
        io["fsyncs"] += 1
        io["dir_fsyncs"] += 1
        io["created"] += 1
        state.rotations[reason] = state.rotations.get(reason, 0) + 1
        info = segment_info(sealed) if sealed is not None else None
        if info is not None:
            state.telemetry.rotated(reason, info.path, info.first_lsn, info.last_lsn)
            state.emit(Sealed(segment=info))
        state.emit(Rotated(reason=reason, path=state.writer.path, first_lsn=writer.last_lsn + 1))
        if sealed is not None and sealed.seal is not None and sealed.index is not None:
            save_index(state.fs, sealed.path, sealed.index, sealed.seal.digest)
        if sealed is not None:
            self._after_seal()
        return info
