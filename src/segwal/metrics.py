"""Metrics of open logs for Prometheus and OpenTelemetry, read from ``wal.stats()``.

The counters themselves need nothing: ``wal.stats()`` (a :class:`segwal.Stats`) holds them.
This module exports them to the two systems programs are run under; each needs its extra,
imported only when the class is created:

    pip install 'segwal[prometheus]'   # prometheus-client
    pip install 'segwal[otel]'         # opentelemetry-api

Prometheus: register one :class:`PrometheusCollector` on *your* registry (never the global
one is touched) and add each log to it; series are told apart by a ``log`` label (the log's
directory unless you name it), so two open logs never collide::

    registry = prometheus_client.CollectorRegistry()
    collector = segwal.metrics.PrometheusCollector(wal_a, wal_b)
    registry.register(collector)

====================================== ========= =================================
Prometheus name                         type      OpenTelemetry instrument
====================================== ========= =================================
``segwal_appends_total``                counter   ``segwal.appends`` ({call})
``segwal_appended_records_total``       counter   ``segwal.appended_records`` ({record})
``segwal_appended_bytes_total``         counter   ``segwal.appended_bytes`` (By; payloads)
``segwal_written_bytes_total``          counter   ``segwal.written_bytes`` (By; frames, seals)
``segwal_fsyncs_total``                 counter   ``segwal.fsyncs`` (every data barrier)
``segwal_fsync_duration_seconds``       histogram ``segwal.fsync.duration`` (s)
``segwal_rotations_total{reason}``      counter   ``segwal.rotations``
``segwal_recovery_cuts_total``          counter   ``segwal.recovery_cuts``
``segwal_corruption_errors_total``      counter   ``segwal.corruption_errors``
``segwal_retention_deletions_total``    counter   ``segwal.retention_deletions``
``segwal_durable_lsn``                  gauge     ``segwal.durable_lsn``
``segwal_first_lsn`` / ``_last_lsn``    gauge     ``segwal.first_lsn`` / ``segwal.last_lsn``
``segwal_log_bytes``                    gauge     ``segwal.log_bytes`` (By)
``segwal_segments``                     gauge     ``segwal.segments``
``segwal_archive_archived_lsn``         gauge     ``segwal.archive.archived_lsn``
``segwal_archive_lag_segments``         gauge     ``segwal.archive.lag_segments``
``segwal_archive_lag_bytes``            gauge     ``segwal.archive.lag_bytes`` (By)
``segwal_archive_lag_seconds``          gauge     ``segwal.archive.lag_seconds`` (s)
``segwal_archive_uploads_total``        counter   ``segwal.archive.uploads``
``segwal_archive_errors_total``         counter   ``segwal.archive.errors`` (failed requests)
``segwal_archive_stopped``              gauge     ``segwal.archive.stopped`` (1: a conflict)
====================================== ========= =================================

The ``archive`` series exist only for logs opened with ``archive=``; alert on a growing
``lag_seconds`` and on ``errors_total`` rising (credentials and permissions fail loudly
there instead of silently in a background thread).

Every series carries ``log``; rotations also ``reason`` (size, age, forced, limit): both
bounded. Counters count since the log was opened (a reopen is a counter reset, which both
systems handle). The fsync histogram times the group commit's ``fdatasync`` (the barrier
an appender waits for), with etcd's buckets, 1 ms doubling to 8.192 s; ``fsyncs_total``
also counts seals and new-segment headers. A closed log's series disappear.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import segwal
from segwal import ArchivedWal, ArchiveStatus, Stats, Wal, events
from segwal.aio import AsyncWal

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
    from prometheus_client.metrics_core import Metric

__all__ = ["FSYNC_BUCKETS", "OtelMetrics", "PrometheusCollector"]

PROMETHEUS_HINT = "pip install 'segwal[prometheus]'"
OTEL_HINT = "pip install 'segwal[otel]'"
# The bounds of Stats.fsync_buckets (etcd's wal_fsync_duration_seconds buckets).
FSYNC_BUCKETS = tuple(0.001 * 2**i for i in range(14))

AnyWal = Wal | AsyncWal

# (name, help, Stats field) of the plain counters.
_COUNTERS = (
    ("appends", "append and append_batch calls that succeeded", "appends", "{call}"),
    ("appended_records", "records appended", "records", "{record}"),
    ("appended_bytes", "payload bytes appended", "payload_bytes", "By"),
    ("written_bytes", "bytes written to segments: frames, seals, headers", "written_bytes", "By"),
    ("fsyncs", "data barriers (fdatasync) on segments, seals included", "fsyncs", "{fsync}"),
    ("recovery_cuts", "torn tails cut or damage quarantined when opening", "recovery_cuts", ""),
    ("corruption_errors", "corruption errors raised by reads", "corruption_errors", ""),
    (
        "retention_deletions",
        "segments deleted by retention or truncate_before",
        "retention_deletions",
        "{segment}",
    ),
)
_GAUGES = (
    ("durable_lsn", "every record up to this LSN survives a crash", "durable_lsn", ""),
    ("first_lsn", "the oldest LSN the log holds", "first_lsn", ""),
    ("last_lsn", "the newest LSN appended", "last_lsn", ""),
    ("log_bytes", "bytes in the log's segment files", "log_bytes", "By"),
    ("segments", "segment files, the active one included", "segments", "{segment}"),
)


# (name, help, ArchiveStatus field or callable, unit, counter?) of the archive's series.
_ARCHIVE: tuple[tuple[str, str, Callable[[ArchiveStatus], float], str, bool], ...] = (
    (
        "archived_lsn",
        "every record up to this LSN is in the archive",
        lambda a: a.archived_lsn,
        "",
        False,
    ),
    (
        "lag_segments",
        "sealed segments not yet archived",
        lambda a: a.lag_segments,
        "{segment}",
        False,
    ),
    ("lag_bytes", "bytes of sealed segments not yet archived", lambda a: a.lag_bytes, "By", False),
    (
        "lag_seconds",
        "age of the oldest record not yet archived",
        lambda a: a.lag_seconds,
        "s",
        False,
    ),
    ("uploads", "segments uploaded since open", lambda a: a.uploads, "{segment}", True),
    ("errors", "failed archive requests since open", lambda a: a.retries, "{request}", True),
    (
        "stopped",
        "1 when uploading stopped on a conflict",
        lambda a: int(a.stopped is not None),
        "",
        False,
    ),
)


def _blocking(wal: AnyWal) -> Wal:
    return wal.wal if isinstance(wal, AsyncWal) else wal


class _Logs:
    """The logs an exporter reports on, by label; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, Wal] = {}

    def add(self, wal: AnyWal, name: str | None) -> tuple[str, Wal]:
        blocking = _blocking(wal)
        label = name or blocking.path
        with self._lock:
            if label in self._by_name:
                raise ValueError(f"a log labelled {label!r} is already reported")
            self._by_name[label] = blocking
        return label, blocking

    def remove(self, wal: AnyWal | str) -> str | None:
        with self._lock:
            for label, known in list(self._by_name.items()):
                if wal == label or (not isinstance(wal, str) and _blocking(wal) is known):
                    del self._by_name[label]
                    return label
        return None

    def stats(self) -> Iterator[tuple[str, Stats]]:
        with self._lock:
            items = list(self._by_name.items())
        for label, wal in items:
            if not wal.closed:
                yield label, wal.stats()

    def archives(self) -> Iterator[tuple[str, ArchiveStatus]]:
        with self._lock:
            items = list(self._by_name.items())
        for label, wal in items:
            if isinstance(wal, ArchivedWal) and not wal.closed:
                yield label, wal.archive_status()


class PrometheusCollector:
    """A prometheus-client collector for any number of logs; register it on your registry.

    ``PrometheusCollector(wal, ...)`` with :class:`segwal.Wal` or :class:`segwal.aio.AsyncWal`
    objects; ``add(wal, name=...)`` and ``remove(wal)`` later. The ``log`` label is ``name``
    or the log's directory. Scraping calls ``wal.stats()``: no I/O, a lock taken briefly.
    """

    def __init__(self, *wals: AnyWal, names: Iterable[str | None] = ()) -> None:
        try:
            from prometheus_client import core
        except ImportError as exc:
            raise ImportError(
                f"segwal.metrics.PrometheusCollector needs prometheus-client: {PROMETHEUS_HINT}"
            ) from exc
        from prometheus_client.utils import floatToGoString

        self._core = core
        self._go = floatToGoString
        self._logs = _Logs()
        labels = list(names)
        for i, wal in enumerate(wals):
            self.add(wal, labels[i] if i < len(labels) else None)

    def add(self, wal: AnyWal, name: str | None = None) -> str:
        """Report on ``wal`` under the label ``name`` (default: its directory); the label."""
        return self._logs.add(wal, name)[0]

    def remove(self, wal: AnyWal | str) -> bool:
        """Stop reporting on a log (or a label)."""
        return self._logs.remove(wal) is not None

    def describe(self) -> list[Metric]:
        # Names only, so a registry refuses a second collector with the same names.
        return list(self._families([]))

    def collect(self) -> list[Metric]:
        archives = list(self._logs.archives())
        return list(self._families(list(self._logs.stats()), archives))

    def _families(
        self,
        logs: list[tuple[str, Stats]],
        archives: Sequence[tuple[str, ArchiveStatus]] = (),
    ) -> Iterator[Metric]:
        core = self._core
        for name, text, read, _unit, is_counter in _ARCHIVE:
            kind = core.CounterMetricFamily if is_counter else core.GaugeMetricFamily
            family = kind(f"segwal_archive_{name}", f"{text}.", labels=["log"])
            for label, status in archives:
                family.add_metric([label], read(status))
            yield family
        for name, text, field, _unit in _COUNTERS:
            counter = core.CounterMetricFamily(f"segwal_{name}", f"{text}.", labels=["log"])
            for label, stats in logs:
                counter.add_metric([label], getattr(stats, field))
            yield counter
        for name, text, field, _unit in _GAUGES:
            gauge = core.GaugeMetricFamily(f"segwal_{name}", f"{text}.", labels=["log"])
            for label, stats in logs:
                gauge.add_metric([label], getattr(stats, field))
            yield gauge
        rotations = core.CounterMetricFamily(
            "segwal_rotations", "segments sealed, by reason.", labels=["log", "reason"]
        )
        for label, stats in logs:
            for reason, count in sorted(stats.rotations.items()):
                rotations.add_metric([label, reason], count)
        yield rotations
        histogram = core.HistogramMetricFamily(
            "segwal_fsync_duration_seconds",
            "duration of the group commit's fdatasync.",
            labels=["log"],
        )
        for label, stats in logs:
            buckets = [
                ("+Inf" if b == float("inf") else repr(b), n) for b, n in stats.fsync_buckets
            ]
            histogram.add_metric([label], buckets, sum_value=stats.fsync_seconds)
        yield histogram


class OtelMetrics:
    """OpenTelemetry observable instruments (and an fsync-duration histogram) for logs.

    ``OtelMetrics(wal, ..., meter_provider=provider)``; without ``meter``/``meter_provider``
    the global meter provider of ``opentelemetry.metrics`` is used, as OpenTelemetry
    libraries do. Instruments are created once; ``add``/``remove`` change which logs they
    observe. The histogram is recorded at each fdatasync through the log's fsync observer;
    call ``close()`` (or ``remove``) to unhook it.
    """

    def __init__(
        self,
        *wals: AnyWal,
        meter_provider: MeterProvider | None = None,
        meter: Meter | None = None,
    ) -> None:
        try:
            from opentelemetry import metrics as otel
        except ImportError as exc:
            raise ImportError(
                f"segwal.metrics.OtelMetrics needs opentelemetry-api: {OTEL_HINT}"
            ) from exc
        self._otel = otel
        if meter is None:
            provider = meter_provider or otel.get_meter_provider()
            meter = provider.get_meter("segwal", segwal.__version__)
        self._logs = _Logs()
        self._unhook: dict[str, Callable[[], None]] = {}
        for name, text, field, unit in _COUNTERS:
            meter.create_observable_counter(
                f"segwal.{name}", callbacks=[self._observer(field)], unit=unit, description=text
            )
        for name, text, field, unit in _GAUGES:
            meter.create_observable_gauge(
                f"segwal.{name}", callbacks=[self._observer(field)], unit=unit, description=text
            )
        meter.create_observable_counter(
            "segwal.rotations",
            callbacks=[self._rotations],
            unit="{segment}",
            description="segments sealed, by reason",
        )
        for name, text, read, unit, is_counter in _ARCHIVE:
            create = (
                meter.create_observable_counter if is_counter else meter.create_observable_gauge
            )
            create(
                f"segwal.archive.{name}",
                callbacks=[self._archive_observer(read)],
                unit=unit,
                description=text,
            )
        self._histogram = meter.create_histogram(
            "segwal.fsync.duration",
            unit="s",
            description="duration of the group commit's fdatasync",
            explicit_bucket_boundaries_advisory=FSYNC_BUCKETS,
        )
        for wal in wals:
            self.add(wal)

    def add(self, wal: AnyWal, name: str | None = None) -> str:
        """Observe ``wal`` with the attribute ``log`` = ``name`` (default: its directory)."""
        label, blocking = self._logs.add(wal, name)
        attributes = {"log": label}
        histogram = self._histogram

        def on_event(event: events.Event) -> None:
            if isinstance(event, events.Synced):
                histogram.record(event.seconds, attributes)

        self._unhook[label] = blocking.observe(on_event)
        return label

    def remove(self, wal: AnyWal | str) -> bool:
        label = self._logs.remove(wal)
        if label is None:
            return False
        self._unhook.pop(label)()
        return True

    def close(self) -> None:
        """Stop observing every log (instruments stay registered, and report nothing)."""
        for label in list(self._unhook):
            self.remove(label)

    def _observer(self, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        observation = self._otel.Observation

        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [
                observation(getattr(stats, field), {"log": label})
                for label, stats in self._logs.stats()
            ]

        return observe

    def _archive_observer(
        self, read: Callable[[ArchiveStatus], float]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        observation = self._otel.Observation

        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [observation(read(a), {"log": label}) for label, a in self._logs.archives()]

        return observe

    def _rotations(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            self._otel.Observation(count, {"log": label, "reason": reason})
            for label, stats in self._logs.stats()
            for reason, count in sorted(stats.rotations.items())
        ]
