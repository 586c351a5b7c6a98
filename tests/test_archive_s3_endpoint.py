"""An S3 endpoint that is not a URL is a typed error at construction, and credentials in
an endpoint's ``user:pass@`` never reach an error message (review defect 7)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import segwal
from segwal.archive.s3 import S3Store, redact


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "supersecretvalue123")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.mark.parametrize("endpoint", ["not a url", "127.0.0.1:9000"])
def test_an_endpoint_without_a_scheme_is_a_typed_error(aws_env: None, endpoint: str) -> None:
    with pytest.raises(segwal.ArchiveAccessError, match="is not a URL") as caught:
        S3Store("bucket", "p", endpoint_url=endpoint)
    assert endpoint in str(caught.value)


def test_opening_a_log_with_a_bad_endpoint_is_a_typed_error(aws_env: None, tmp_path: Path) -> None:
    with pytest.raises(segwal.ArchiveAccessError, match="is not a URL"):
        segwal.open(
            tmp_path / "log", archive="s3://bucket/p", archive_options={"endpoint_url": "nope"}
        )


def test_credentials_in_an_endpoint_url_are_not_in_errors(aws_env: None) -> None:
    with socket.socket() as sock:  # a port nobody listens on: the connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = S3Store(
        "bucket",
        "p",
        endpoint_url=f"http://user:pa55word@127.0.0.1:{port}",
        connect_timeout=1,
        read_timeout=1,
        max_attempts=1,
    )
    assert "pa55word" not in repr(store)
    with pytest.raises(segwal.ArchiveUnavailableError) as caught:
        store.put_if_absent("k", b"x")
    assert "pa55word" not in str(caught.value) and "127.0.0.1" in str(caught.value)
    assert redact("see http://a:b@h:1/x and https://h/y") == "see http://***@h:1/x and https://h/y"
