"""Counters in wal.stats(), their export to Prometheus and OpenTelemetry, and the log lines
of notable events."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families

import segwal
import segwal.aio
import segwal.metrics


def samples(
    registry: prometheus_client.CollectorRegistry,
) -> dict[tuple[str, tuple[Any, ...]], float]:
    text = prometheus_client.generate_latest(registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_two_logs_in_one_registry_are_told_apart_by_label(tmp_path: Path) -> None:
    a_dir, b_dir = str(tmp_path / "a"), str(tmp_path / "b")
    with segwal.open(a_dir, segment_bytes=2048) as a, segwal.open(b_dir) as b:
        a.append_batch([b"x" * 100] * 3)
        for _ in range(30):
            a.append(b"y" * 100)  # rotates by size
        b.append_batch([b"z" * 10] * 5, type=2)
        registry = prometheus_client.CollectorRegistry()
        collector = segwal.metrics.PrometheusCollector(a)
        collector.add(b, name="b")
        registry.register(collector)
        got = samples(registry)
        la, lb = (("log", a_dir),), (("log", "b"),)
        assert got["segwal_appended_records_total", la] == 33
        assert got["segwal_appended_records_total", lb] == 5
        assert got["segwal_appended_bytes_total", lb] == 50
        assert got["segwal_durable_lsn", la] == 33
        assert got["segwal_durable_lsn", lb] == 5
        assert got["segwal_segments", la] == a.stats().segments > 1
        assert got["segwal_log_bytes", lb] == sum(s.size_bytes for s in b.segments())
        assert got["segwal_rotations_total", (("log", a_dir), ("reason", "size"))] >= 1
        fsyncs = got["segwal_fsync_duration_seconds_count", lb]
        assert fsyncs >= 1
        assert got["segwal_fsync_duration_seconds_bucket", (("le", "+Inf"), ("log", "b"))] == fsyncs
        assert (
            got["segwal_fsync_duration_seconds_bucket", (("le", "8.192"), ("log", "b"))] <= fsyncs
        )
        assert got["segwal_recovery_cuts_total", la] == 0
        assert got["segwal_corruption_errors_total", la] == 0
        assert got["segwal_retention_deletions_total", la] == 0
        # A second collector with the same names is refused, not silently doubled.
        with pytest.raises(ValueError, match="Duplicated"):
            registry.register(segwal.metrics.PrometheusCollector(b, names=["b2"]))
        with pytest.raises(ValueError, match="already"):
            collector.add(b, name="b")
        # The global registry is never touched.
        assert not [m for m in prometheus_client.REGISTRY.collect() if m.name.startswith("segwal")]
    assert ("segwal_durable_lsn", la) not in samples(registry)  # closed logs drop out


def test_async_logs_are_reported_too(tmp_path: Path) -> None:
    import asyncio

    async def main() -> dict[tuple[str, tuple[Any, ...]], float]:
        async with segwal.aio.open(tmp_path / "log") as wal:
            await asyncio.gather(*(wal.append(b"r") for _ in range(20)))
            registry = prometheus_client.CollectorRegistry()
            registry.register(segwal.metrics.PrometheusCollector(wal, names=["aio"]))
            return samples(registry)

    got = asyncio.run(main())
    assert got["segwal_appended_records_total", (("log", "aio"),)] == 20


def test_opentelemetry_instruments_read_through_the_sdk(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with segwal.open(tmp_path / "a") as a, segwal.open(tmp_path / "b", segment_bytes=2048) as b:
        otel = segwal.metrics.OtelMetrics(meter_provider=provider)
        otel.add(a, name="a")
        otel.add(b, name="b")
        a.append_batch([b"x"] * 4)
        for _ in range(30):
            b.append(b"y" * 100)
        data = reader.get_metrics_data()
        assert data is not None
        points: dict[tuple[str, tuple[Any, ...]], Any] = {}
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        points[metric.name, tuple(sorted(point.attributes.items()))] = point
        assert points["segwal.appended_records", (("log", "a"),)].value == 4
        assert points["segwal.appended_records", (("log", "b"),)].value == 30
        assert points["segwal.durable_lsn", (("log", "b"),)].value == 30
        assert points["segwal.segments", (("log", "b"),)].value == b.stats().segments
        assert points["segwal.rotations", (("log", "b"), ("reason", "size"))].value >= 1
        histogram = points["segwal.fsync.duration", (("log", "b"),)]
        assert histogram.count >= 30
        assert list(histogram.explicit_bounds) == list(segwal.metrics.FSYNC_BUCKETS)
        assert [bound for bound, _ in b.stats().fsync_buckets[:-1]] == list(
            segwal.metrics.FSYNC_BUCKETS
        )
        otel.close()
    provider.shutdown()


def test_a_missing_extra_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, wal_dir: str
) -> None:
    with segwal.open(wal_dir) as wal:
        monkeypatch.setitem(sys.modules, "prometheus_client", None)
        with pytest.raises(ImportError, match=r"pip install 'segwal\[prometheus\]'"):
            segwal.metrics.PrometheusCollector(wal)
        monkeypatch.setitem(sys.modules, "opentelemetry", None)
        with pytest.raises(ImportError, match=r"pip install 'segwal\[otel\]'"):
            segwal.metrics.OtelMetrics(wal)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.__dict__.get("event") == name]


def test_notable_events_are_logged_with_fields_and_counted(
    wal_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert logging.getLogger("segwal").handlers == []  # the library configures none
    caplog.set_level(logging.INFO, logger="segwal")
    with segwal.open(wal_dir, segment_bytes=2048, slow_fsync_seconds=1e-9) as wal:
        for i in range(40):
            wal.append(b"%03d" % i * 30)
        (rotation,) = events(caplog, "rotation")[:1]
        assert rotation.__dict__["reason"] == "size" and rotation.__dict__["log"] == wal_dir
        slow = events(caplog, "slow_fsync")
        assert slow and slow[0].levelno == logging.WARNING and slow[0].__dict__["seconds"] > 0
        sealed = wal.segments()[0]
        result = wal.truncate_before(sealed.last_lsn + 1)
        assert wal.stats().retention_deletions == result.segments_deleted == 1
        (deletion,) = events(caplog, "retention_deletion")
        assert deletion.__dict__["path"] == sealed.path
        active = wal.segments()[-1].path
        last = wal.last_lsn
    with open(active, "ab") as f:
        f.write(b"\x01" * 100)  # a torn tail
    caplog.clear()
    with segwal.open(wal_dir) as wal:
        assert wal.stats().recovery_cuts == 1
        (cut,) = events(caplog, "recovery_cut")
        assert cut.levelno == logging.WARNING
        assert cut.__dict__["path"] == active and cut.__dict__["lsn"] == last + 1
        assert cut.__dict__["offset"] == os.path.getsize(active)


def test_corruption_errors_raised_by_reads_are_counted(wal_dir: str) -> None:
    with segwal.open(wal_dir) as wal:
        wal.append_batch([b"a" * 1000] * 10)
        sealed = wal.rotate()
    assert sealed is not None
    with open(sealed.path, "r+b") as f:
        f.seek(sealed.size_bytes // 2)
        f.write(b"\xff" * 8)
    with segwal.open(wal_dir) as wal:  # sealed segments are not scanned at open
        with pytest.raises(segwal.CorruptionError):
            list(wal.replay())
        assert wal.stats().corruption_errors == 1


def test_archive_lag_errors_and_uploads_are_exported(tmp_path: Path) -> None:
    from segwal.archive.memory import MemoryStore

    store = MemoryStore()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with segwal.open(
        tmp_path / "a", archive=store, segment_bytes=2048, archive_poll_interval=0.02
    ) as wal:
        for _ in range(40):
            wal.append(b"z" * 100)
        wal.rotate()
        assert wal.wait_archived(wal.last_lsn, timeout=30)
        store.expire_credentials()
        for _ in range(40):
            wal.append(b"z" * 100)
        wal.rotate()
        status = wal.archive_status()
        deadline = time.monotonic() + 30
        while wal.archive_status().retries == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # until the uploader meets the expired credentials
        registry = prometheus_client.CollectorRegistry()
        registry.register(segwal.metrics.PrometheusCollector(wal, names=["a"]))
        got = samples(registry)
        label = (("log", "a"),)
        assert got["segwal_archive_archived_lsn", label] == status.archived_lsn
        assert got["segwal_archive_uploads_total", label] == status.uploads > 0
        assert got["segwal_archive_errors_total", label] >= 1
        assert got["segwal_archive_lag_segments", label] >= 1
        assert got["segwal_archive_stopped", label] == 0
        otel = segwal.metrics.OtelMetrics(wal, meter_provider=provider)
        data = reader.get_metrics_data()
        assert data is not None
        names = {
            m.name: m for r in data.resource_metrics for sc in r.scope_metrics for m in sc.metrics
        }
        assert names["segwal.archive.uploads"].data.data_points[0].value == status.uploads
        assert names["segwal.archive.lag_bytes"].data.data_points[0].value > 0
        otel.close()
        store.renew_credentials()
    provider.shutdown()
