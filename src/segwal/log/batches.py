"""The batch appends of a writable log: ``append_batch``, ``append_many`` and the batch encoder.

A mixin of ``Appender`` (log/appender.py), which holds the state, the rotation and the
single-append path; a batch is checked and compressed before the log's lock is taken, then
encoded and written under it, rotating first when it does not fit the active segment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from segwal.errors import RecordTooLargeError
from segwal.format.frames import Prepared
from segwal.format.framing import encode_frames
from segwal.format.layout import MAX_LSN, SEAL_SIZE
from segwal.log.arguments import MAX_TYPE, check_type, exhausted, payload_list, to_payload
from segwal.log.config import WalConfig
from segwal.log.pipeline import CompressionPipeline
from segwal.log.rotation import Rotation
from segwal.log.state import LogState
from segwal.storage.segment import SegmentWriter


class BatchAppends:
    """Batch appends; mixed into ``Appender``, which sets these attributes and methods."""

    _state: LogState
    _config: WalConfig
    _max_record_bytes: int
    pipeline: CompressionPipeline | None
    rotation: Rotation

    if TYPE_CHECKING:

        def settle(self) -> SegmentWriter: ...

        def stamp(self) -> int: ...

        def _write(
            self, writer: SegmentWriter, data: bytes | bytearray, last: int, ts: int
        ) -> None: ...

    def append_batch(
        self, payloads: Iterable[bytes | bytearray | memoryview], type: int = 0
    ) -> range:
        state = self._state
        items: list[Any] = payloads if isinstance(payloads, list) else payload_list(payloads)
        if type.__class__ is not int or not 0 <= type <= MAX_TYPE:
            check_type(type)
        # Fast path: no per-record type check. The encoder refuses payloads that are not
        # bytes-like or whose len() is not their size, and then they are converted one by one.
        try:
            lengths = list(map(len, items))
        except TypeError:
            items = [to_payload(p, i) for i, p in enumerate(items)]
            lengths = list(map(len, items))
        self._check_sizes(lengths)  # before anything is encoded
        if self.pipeline is not None and self.pipeline.takes(lengths):
            return self.pipeline.append_batch(items, lengths, type)  # queued, LSNs given
        prepared = state.coding.prepare(items, lengths)  # compressed outside the lock
        with state.lock:
            writer = self.settle()
            first = writer.last_lsn + 1
            if not items:
                return range(first, first)
            last = first + len(items) - 1
            if last > MAX_LSN:
                raise exhausted()
            ts = self.stamp()
            try:
                data = self._encode_batch(writer, first, type, ts, items, lengths, prepared)
            except (TypeError, ValueError):
                items = [to_payload(p, i) for i, p in enumerate(items)]
                lengths = list(map(len, items))
                self._check_sizes(lengths)
                data = self._encode_batch(writer, first, type, ts, items, lengths)
            self._write_batch(writer, data, first, type, ts, items, lengths, prepared)
            counters = state.counters
            counters["appends"] += 1
            counters["records"] += len(items)
            counters["payload_bytes"] += sum(lengths)
        if self._config.sync == "always":
            state.commit.wait_durable(last, lead=True)
        return range(first, last + 1)

    def append_many(
        self, requests: Sequence[tuple[Iterable[bytes | bytearray | memoryview], int]]
    ) -> list[range | Exception]:
        """Append several batches with one write and, with sync="always", one barrier.

        Each request ``(payloads, type)`` is its own batch (its own frames, all-or-nothing
        after a crash) and is checked on its own: a request with a bad payload, type or size
        gets its exception in its place in the result and takes no LSN; the others go on.
        The batches of one call share one timestamp. A failure of the log itself (a failed
        write or barrier, a closed log) raises, and then no request is acknowledged.
        """
        state = self._state
        results: list[range | Exception] = []
        # Checked and compressed before the lock is taken.
        checked: list[tuple[list[bytes], int, list[int], Prepared | None] | Exception] = []
        for payloads, record_type in requests:
            try:
                items = [to_payload(p, i) for i, p in enumerate(payload_list(payloads))]
                check_type(record_type)
                lengths = list(map(len, items))
                self._check_sizes(lengths)
            except (TypeError, ValueError) as exc:  # InvalidPayload-, RecordTooLarge-, Config-
                checked.append(exc)
                continue
            checked.append((items, record_type, lengths, state.coding.prepare(items, lengths)))
        with state.lock:
            writer = self.settle()
            ts = self.stamp()
            chunks: list[bytes | bytearray] = []
            pending = 0  # bytes in chunks, not yet written
            next_lsn = writer.last_lsn + 1
            limit = self._config.segment_bytes
            counters = state.counters
            for entry in checked:
                if isinstance(entry, Exception):
                    results.append(entry)
                    continue
                items, record_type, lengths, prepared = entry
                last = next_lsn + len(items) - 1
                if last > MAX_LSN:
                    results.append(exhausted())
                    continue
                if not items:
                    results.append(range(next_lsn, next_lsn))
                    continue
                largest = max(lengths)
                data = self._encode_batch(
                    writer, next_lsn, record_type, ts, items, lengths, prepared
                )
                if chunks and (
                    largest > writer.header.max_record_bytes
                    or writer.offset + pending + len(data) + SEAL_SIZE > limit
                ):
                    # It does not fit behind what is gathered: write that first.
                    self._write(writer, b"".join(chunks), next_lsn - 1, ts)
                    chunks, pending = [], 0
                if not chunks and self.rotation.due(writer, len(data), largest, ts):
                    writer = self.rotation.for_append(writer, len(data), largest, ts)
                    data = self._encode_batch(
                        writer, next_lsn, record_type, ts, items, lengths, prepared
                    )
                chunks.append(data)
                pending += len(data)
                results.append(range(next_lsn, last + 1))
                next_lsn = last + 1
                counters["appends"] += 1
                counters["records"] += len(items)
                counters["payload_bytes"] += sum(lengths)
            if chunks:
                whole = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self._write(writer, whole, next_lsn - 1, ts)
        if self._config.sync == "always" and next_lsn - 1 > state.commit.durable_lsn:
            state.commit.wait_durable(next_lsn - 1, lead=True)
        return results

    def _write_batch(
        self,
        writer: SegmentWriter,
        data: bytes | bytearray,
        first: int,
        record_type: int,
        ts: int,
        items: list[bytes],
        lengths: list[int],
        prepared: Prepared | None = None,
    ) -> None:
        """Write the batch ``data`` (``items`` encoded from LSN ``first``), rotating first
        and encoding again when it does not fit the active segment."""
        largest = max(lengths)
        if self.rotation.due(writer, len(data), largest, ts):
            writer = self.rotation.for_append(writer, len(data), largest, ts)
            data = self._encode_batch(writer, first, record_type, ts, items, lengths, prepared)
        self._write(writer, data, first + len(items) - 1, ts)

    def write_queued(
        self,
        items: list[bytes],
        lengths: list[int],
        first: int,
        record_type: int,
        ts: int,
        prepared: Prepared | None,
    ) -> None:
        """Write a batch the pipeline compressed (the lock held; LSNs given at append)."""
        writer = self._state.check_writable()
        data = self._encode_batch(writer, first, record_type, ts, items, lengths, prepared)
        self._write_batch(writer, data, first, record_type, ts, items, lengths, prepared)

    def _check_sizes(self, lengths: list[int]) -> None:
        limit = self._max_record_bytes
        largest = max(lengths, default=0)
        if largest > limit:
            raise RecordTooLargeError(largest, limit, index=lengths.index(largest))

    def _encode_batch(
        self,
        writer: SegmentWriter,
        first: int,
        record_type: int,
        ts: int,
        items: list[bytes],
        lengths: list[int],
        prepared: Prepared | None = None,
    ) -> bytearray:
        if writer.encoder is not None:  # format v2: compressed or encrypted frames
            return writer.encoder.encode(
                first_lsn=first,
                record_type=record_type,
                timestamp_us=ts,
                durable_lsn=self._state.commit.durable_lsn,
                payloads=items,
                lengths=lengths,
                prepared=prepared,
            )
        return encode_frames(
            seed=writer.header.seed,
            first_lsn=first,
            record_type=record_type,
            timestamp_us=ts,
            durable_lsn=self._state.commit.durable_lsn,
            payloads=items,
            lengths=lengths,
        )
