"""pytest fixtures for a real S3 server: Ceph RGW, started once per session (``cephlib``).

Use in a test::

    def test_x(ceph_s3: CephS3) -> None:          # runs twice: plain HTTP and TLS
        store = ceph_s3.store()                   # an S3Store on a bucket of its own
        segwal.open(path, archive=ceph_s3.url, **ceph_s3.options)
        subprocess.run([...], env={**os.environ, **ceph_s3.env})   # AWS_* for the CLI

``ceph_s3_plain`` and ``ceph_s3_tls`` are the two halves alone. Every test gets a new,
empty bucket (emptied and removed afterwards). Without Ceph's programs the tests skip with
the reason and the install command; under ``CI=true`` they fail instead, since ``.ci/run``
installs them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import cephlib

IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")
_counter = iter(range(1_000_000))


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: .ci/run installs it)", pytrace=False)
    pytest.skip(reason)


@dataclass
class CephS3:
    """One endpoint of the session's Ceph (plain or TLS) and a bucket for one test."""

    tls: bool
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str
    ca_bundle: str | None
    bucket: str
    prefix: str = "log"
    client: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """``s3://bucket/prefix``: the archive URL for this test."""
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``open_store``/``S3Store`` that reach this endpoint."""
        return {
            "endpoint_url": self.endpoint_url,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "region": self.region,
            "ca_bundle": self.ca_bundle,
        }

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables for a subprocess (or ``monkeypatch.setenv``)."""
        env = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        if self.ca_bundle:
            env["AWS_CA_BUNDLE"] = self.ca_bundle
        return env

    def store(self, prefix: str | None = None, **options: Any) -> Any:
        """A :class:`segwal.archive.s3.S3Store` on this test's bucket."""
        from segwal.archive.s3 import S3Store

        return S3Store(
            self.bucket, self.prefix if prefix is None else prefix, **(self.options | options)
        )

    def new_bucket(self) -> str:
        """Another empty bucket on the same endpoint (removed at the end of the test)."""
        name = f"segwal-{next(_counter)}-{uuid.uuid4().hex[:8]}"
        self.client.create_bucket(Bucket=name)
        self._made.append(name)
        return name

    def __post_init__(self) -> None:
        self._made: list[str] = []

    def cleanup(self) -> None:
        for bucket in self._made:
            _remove_bucket(self.client, bucket)


def _remove_bucket(client: Any, bucket: str) -> None:
    """Best effort: the cluster's objects are in RAM, and it dies with the session."""
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if objects:
                client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
        client.delete_bucket(Bucket=bucket)
    except Exception:
        pass


@pytest.fixture(scope="session")
def ceph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cephlib.Cluster]:
    """The session's Ceph cluster (one monitor, one memstore OSD, radosgw plain + TLS)."""
    absent = cephlib.missing()
    if absent:
        _unavailable(
            f"Ceph is not installed ({', '.join(absent)} missing); as root: {cephlib.INSTALL_HINT}"
        )
    try:
        import boto3  # noqa: F401
    except ImportError:
        _unavailable("boto3 is not installed: pip install -e '.[dev]'")
    try:
        cluster = cephlib.start(tmp_path_factory.mktemp("ceph"), watchdog=True)
    except cephlib.CephError:
        # Once more on fresh ports: a free port found at start may be taken before the
        # gateway binds it (other test runs share the machine).
        cluster = cephlib.start(tmp_path_factory.mktemp("ceph"), watchdog=True)
    try:
        yield cluster
    finally:
        cephlib.stop(cluster)


def _endpoint(cluster: cephlib.Cluster, tls: bool) -> Iterator[CephS3]:
    import boto3
    from botocore.config import Config

    endpoint = cluster.https if tls else cluster.http
    ca_bundle = cluster.ca_bundle if tls else None
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=cluster.access_key,
        aws_secret_access_key=cluster.secret_key,
        region_name=cluster.region,
        verify=ca_bundle,
        config=Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
        ),
    )
    made = CephS3(
        tls=tls,
        endpoint_url=endpoint,
        access_key_id=cluster.access_key,
        secret_access_key=cluster.secret_key,
        region=cluster.region,
        ca_bundle=ca_bundle,
        bucket="",
        client=client,
    )
    made.bucket = made.new_bucket()
    try:
        yield made
    finally:
        made.cleanup()
        client.close()


@pytest.fixture(params=["plain", "tls"])
def ceph_s3(request: pytest.FixtureRequest, ceph: cephlib.Cluster) -> Iterator[CephS3]:
    """A bucket of its own on the session's Ceph, over plain HTTP and over TLS."""
    yield from _endpoint(ceph, request.param == "tls")


@pytest.fixture
def ceph_s3_plain(ceph: cephlib.Cluster) -> Iterator[CephS3]:
    yield from _endpoint(ceph, tls=False)


@pytest.fixture
def ceph_s3_tls(ceph: cephlib.Cluster) -> Iterator[CephS3]:
    yield from _endpoint(ceph, tls=True)
