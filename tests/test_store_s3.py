"""The s3:// store's errors, configuration and probe (issue 12).

Misconfiguration (wrong keys, a missing bucket, an untrusted certificate, no credentials)
is tested on the real Ceph; what Ceph will not do on request (a 503 SlowDown, a 409
ConditionalRequestConflict, a body cut short, a server that never answers, a store that
ignores ``If-None-Match``) comes from a small scripted HTTP server on a real socket.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ceph_fixture import CephS3
from segwal.archive.local import LocalStore
from segwal.archive.s3 import S3Store
from segwal.archive.urls import PROBE_PREFIX, open_store, probe
from segwal.errors import (
    ArchiveAccessError,
    ArchiveError,
    ArchiveNotFoundError,
    ArchiveUnavailableError,
)

FAST = {"connect_timeout": 1.0, "read_timeout": 1.0, "max_attempts": 1}
KEYS = {"access_key_id": "AKIDEXAMPLE", "secret_access_key": "secret", "region": "us-east-1"}

# -- misconfiguration on the real Ceph ---------------------------------------------------


def test_wrong_secret_is_an_access_error(ceph_s3: CephS3) -> None:
    ceph_s3.store().put("k", b"v")
    wrong = ceph_s3.store(secret_access_key="not-the-secret")
    for call in (lambda: wrong.put("k", b"x"), lambda: wrong.get("k"), lambda: wrong.head("k")):
        with pytest.raises(ArchiveAccessError) as caught:
            call()
        assert caught.value.url == ceph_s3.url + "/"
    with pytest.raises(ArchiveAccessError):
        list(wrong.list(""))
    assert ceph_s3.store().get("k") == b"v"


def test_unknown_access_key_is_an_access_error(ceph_s3: CephS3) -> None:
    unknown = ceph_s3.store(access_key_id="NOSUCHKEY0000000")
    with pytest.raises(ArchiveAccessError, match=r"InvalidAccessKeyId|403"):
        unknown.put_if_absent("k", b"x")
    with pytest.raises(ArchiveAccessError):
        unknown.delete("k")


def test_a_missing_bucket_is_an_access_error(ceph_s3: CephS3) -> None:
    store = S3Store("segwal-no-such-bucket", "p", **ceph_s3.options)
    for call in (
        lambda: store.put_if_absent("k", b"x"),
        lambda: store.put("k", b"x"),
        lambda: store.get("k"),
        lambda: list(store.list("")),
        lambda: store.delete("k"),
    ):
        with pytest.raises(ArchiveAccessError, match="NoSuchBucket"):
            call()
    with pytest.raises(ArchiveAccessError, match="NoSuchBucket"):
        probe(store)


def test_a_bucket_that_vanishes(ceph_s3: CephS3) -> None:
    bucket = ceph_s3.new_bucket()
    store = S3Store(bucket, "", **ceph_s3.options)
    store.put("k", b"x")
    ceph_s3.client.delete_object(Bucket=bucket, Key="k")
    ceph_s3.client.delete_bucket(Bucket=bucket)
    with pytest.raises(ArchiveAccessError, match="NoSuchBucket"):
        store.put_if_absent("k", b"x")


def test_tls_without_the_ca_bundle_is_an_access_error(
    ceph_s3_tls: CephS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    untrusting = ceph_s3_tls.store(ca_bundle=None, **FAST)
    with pytest.raises(ArchiveAccessError, match="TLS"):
        untrusting.put("k", b"x")
    assert ceph_s3_tls.store().head("k") is None  # nothing went out unverified


def test_missing_credentials_are_an_access_error(
    ceph_s3_plain: CephS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = S3Store(ceph_s3_plain.bucket, "p", endpoint_url=ceph_s3_plain.endpoint_url, **FAST)
    with pytest.raises(ArchiveAccessError, match="credentials"):
        store.put("k", b"x")


def test_the_standard_aws_environment_configures_the_store(
    ceph_s3: CephS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ceph_s3.env.items():
        monkeypatch.setenv(name, value)
    store = open_store(ceph_s3.url)
    assert isinstance(store, S3Store) and store.endpoint == ceph_s3.endpoint_url
    assert store.put_if_absent("from-env", b"x", {"k": "v"}) is True
    probe(store)
    seen = ceph_s3.store().head("from-env")
    assert seen is not None and seen.metadata == {"k": "v"}
    assert store.prefix == "log/" and store.url == f"s3://{ceph_s3.bucket}/log/"


def test_probe_passes_on_good_stores_and_leaves_nothing(ceph_s3: CephS3, tmp_path: Path) -> None:
    for store in (ceph_s3.store(), LocalStore(tmp_path)):
        probe(store)
        assert list(store.list(PROBE_PREFIX)) == []


def test_prefixes_keep_stores_apart(ceph_s3: CephS3) -> None:
    one, two = ceph_s3.store("one"), ceph_s3.store("one/two")
    one.put("k", b"1")
    two.put("k", b"2")
    assert one.get("k") == b"1" and two.get("k") == b"2"
    assert [info.key for info in one.list("")] == ["k", "two/k"]
    assert [info.key for info in two.list("")] == ["k"]


# -- faults from a scripted server -------------------------------------------------------


Handler = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture
def scripted() -> Iterator[Callable[[Handler], str]]:
    """Start an HTTP server on 127.0.0.1 whose every request runs ``handler``; its URL."""
    servers: list[ThreadingHTTPServer] = []

    def serve(handler: Handler) -> str:
        class Scripted(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one_request(self) -> None:
                self.raw_requestline = self.rfile.readline(65537)
                if not self.raw_requestline or not self.parse_request():
                    self.close_connection = True
                    return
                length = int(self.headers.get("Content-Length") or 0)
                self.body = self.rfile.read(length)
                handler(self)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def answer(request: BaseHTTPRequestHandler, status: int, body: bytes = b"", **headers: str) -> None:
    request.send_response(status)
    for name, value in headers.items():
        request.send_header(name.replace("_", "-"), value)
    request.send_header("Content-Length", headers.get("Content_Length", str(len(body))))
    request.end_headers()
    request.wfile.write(body)
    request.wfile.flush()


def s3_error(code: str) -> bytes:
    return f"<Error><Code>{code}</Code><Message>scripted</Message></Error>".encode()


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "SlowDown"), (500, "InternalError"), (409, "ConditionalRequestConflict")],
)
def test_transient_answers_are_unavailable_with_the_status(
    scripted: Callable[[Handler], str], status: int, code: str
) -> None:
    url = scripted(lambda r: answer(r, status, s3_error(code)))
    store = S3Store("bucket", "p", endpoint_url=url, **KEYS, **FAST)
    with pytest.raises(ArchiveUnavailableError) as caught:
        store.put_if_absent("k", b"x")
    assert caught.value.status == status and caught.value.key == "k"
    with pytest.raises(ArchiveUnavailableError):
        store.get("k")


def test_expired_token_is_an_access_error(scripted: Callable[[Handler], str]) -> None:
    url = scripted(lambda r: answer(r, 400, s3_error("ExpiredToken")))
    store = S3Store("bucket", "", endpoint_url=url, session_token="old", **KEYS, **FAST)
    with pytest.raises(ArchiveAccessError, match="ExpiredToken"):
        store.put("k", b"x")


def test_a_missing_key_is_not_found(scripted: Callable[[Handler], str]) -> None:
    url = scripted(lambda r: answer(r, 404, s3_error("NoSuchKey")))
    store = S3Store("bucket", "", endpoint_url=url, **KEYS, **FAST)
    with pytest.raises(ArchiveNotFoundError):
        store.get("k")


def test_a_body_cut_short_is_unavailable(scripted: Callable[[Handler], str]) -> None:
    def cut(request: BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Length", "1000")
        request.end_headers()
        request.wfile.write(b"x" * 400)
        request.wfile.flush()
        request.close_connection = True

    store = S3Store("bucket", "", endpoint_url=scripted(cut), **KEYS, **FAST)
    with pytest.raises(ArchiveUnavailableError):
        store.get("k")


def test_a_range_answered_wrongly_is_unavailable(scripted: Callable[[Handler], str]) -> None:
    # 206 with a Content-Range for other bytes than asked: never returned as if right.
    url = scripted(lambda r: answer(r, 206, b"abcd", Content_Range="bytes 0-3/100"))
    store = S3Store("bucket", "", endpoint_url=url, **KEYS, **FAST)
    with pytest.raises(ArchiveUnavailableError, match="ranged GET"):
        store.get("k", 10, 14)
    with pytest.raises(ArchiveUnavailableError, match="ranged GET"):
        store.get("k", 0, 10)


@pytest.mark.timeout(30)
def test_a_closed_port_fails_fast(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nobody listens
    store = S3Store("bucket", "", endpoint_url=f"http://127.0.0.1:{port}", **KEYS, **FAST)
    for call in (lambda: store.put_if_absent("k", b"x"), lambda: store.head("k")):
        with pytest.raises(ArchiveUnavailableError, match="Connect"):
            call()


@pytest.mark.timeout(30)
def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # connections are accepted by the kernel, never answered
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        store = S3Store("bucket", "", endpoint_url=url, **KEYS, **FAST)
        with pytest.raises(ArchiveUnavailableError, match="Timeout"):
            store.get("k")
        with pytest.raises(ArchiveUnavailableError, match="Timeout"):
            list(store.list(""))


def test_probe_refuses_a_store_that_ignores_conditional_writes(
    scripted: Callable[[Handler], str],
) -> None:
    objects: dict[str, bytes] = {}

    def careless(request: BaseHTTPRequestHandler) -> None:  # PUT always wins
        if request.command == "PUT":
            objects[request.path] = request.body
            answer(request, 200, ETag='"x"')
        elif request.command == "GET" and request.path in objects:
            answer(request, 200, objects[request.path])
        elif request.command == "DELETE":
            objects.pop(request.path, None)
            answer(request, 204)
        else:
            answer(request, 404, s3_error("NoSuchKey"))

    store = S3Store("bucket", "p", endpoint_url=scripted(careless), **KEYS, **FAST)
    with pytest.raises(ArchiveAccessError, match="conditional writes ignored"):
        probe(store)
    assert objects == {}  # the probe object was deleted anyway


def test_invalid_ranges_are_refused_before_a_request(scripted: Callable[[Handler], str]) -> None:
    calls: list[str] = []
    url = scripted(lambda r: (calls.append(r.path), answer(r, 500))[1])
    store = S3Store("bucket", "", endpoint_url=url, **KEYS, **FAST)
    with pytest.raises(ArchiveError):
        store.get("k", 5, 2)
    assert calls == []


def test_open_store_says_what_to_install_without_boto3(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['boto3'] = None\n"
        "from segwal.archive.urls import open_store\n"
        "from segwal.errors import ArchiveAccessError\n"
        "try:\n    open_store('s3://bucket/prefix')\n"
        "except ArchiveAccessError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'segwal[s3]'" in done.stdout, done.stderr
