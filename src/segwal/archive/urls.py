"""Archive URLs to stores: ``file:///path`` and ``s3://bucket/prefix``.

The S3 client is imported only when an ``s3://`` URL is opened, so ``import segwal`` and
``file://`` archives cost nothing and need no extra; without it the error says what to
install.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

from segwal.archive.store import ObjectStore
from segwal.errors import ArchiveAccessError, ConfigError

S3_HINT = "pip install 'segwal[s3]'"
SCHEMES = ("file://", "s3://")


def local_path(url: str) -> str:
    """The directory a ``file://`` URL names (absolute; only this host)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"a file:// archive must be on this host, not {parts.netloc!r}: {url}")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ConfigError(f"a file:// archive needs an absolute path (file:///dir): {url}")
    if parts.query or parts.fragment:
        raise ConfigError(f"a file:// archive URL takes no query or fragment: {url}")
    return path


def s3_location(url: str) -> tuple[str, str]:
    """The bucket and the key prefix (``""`` or ending in ``/``) of an ``s3://`` URL."""
    parts = urlsplit(url)
    bucket = parts.netloc
    if not bucket:
        raise ConfigError(f"an s3:// archive URL needs a bucket (s3://bucket/prefix): {url}")
    if parts.query or parts.fragment:
        raise ConfigError(f"an s3:// archive URL takes no query or fragment: {url}")
    prefix = parts.path.strip("/")
    return bucket, (prefix + "/" if prefix else "")


def open_store(url: str, **options: Any) -> ObjectStore:
    """The store an archive URL names.

    ``file:///dir`` is a local directory (options: ``create``). ``s3://bucket/prefix`` is
    S3 or an S3-compatible server (options: see :class:`segwal.archive.s3.S3Store`);
    endpoint and credentials default to the standard AWS environment and config files.
    """
    if not isinstance(url, str):
        raise ConfigError(f"an archive URL is a string, not {type(url).__name__}")
    if url.startswith("file://"):
        from segwal.archive.local import LocalStore

        return LocalStore(local_path(url), **options)
    if url.startswith("s3://"):
        bucket, prefix = s3_location(url)
        try:
            # Here, not at the top: the module imports the client, an optional extra.
            from segwal.archive import s3
        except ImportError as exc:
            if exc.name is None or exc.name.split(".")[0] not in ("boto3", "botocore"):
                raise
            raise ArchiveAccessError(
                f"an s3:// archive needs the S3 client ({exc.name} is not installed): {S3_HINT}",
                url=url,
            ) from exc
        store: ObjectStore = s3.S3Store(bucket, prefix, **options)
        return store
    raise ConfigError(f"unknown archive URL scheme (use {' or '.join(SCHEMES)}): {url}")


PROBE_PREFIX = ".segwal-probe/"


def probe(store: ObjectStore) -> None:
    """Check at open that ``store`` can hold an archive, or raise a typed error.

    Puts, reads back and deletes a small object under ``.segwal-probe/``, and makes sure a
    second conditional create of the same key is refused: a store that ignores
    ``If-None-Match`` would let two segments overwrite each other, so it is refused with
    ``ArchiveAccessError("conditional writes ignored")``. Missing credentials, a missing
    bucket or no permission raise ``ArchiveAccessError``; a store that is down raises
    ``ArchiveUnavailableError`` (the caller decides whether to open anyway).
    """
    key = PROBE_PREFIX + uuid.uuid4().hex
    body = b"segwal probe " + key.encode()
    if not store.put_if_absent(key, body, {"probe": "1"}):
        raise ArchiveAccessError(
            "a new probe object already exists: conditional writes misreported", url=store.url
        )
    try:
        if store.get(key) != body:
            raise ArchiveAccessError("the probe object reads back different", url=store.url)
        if store.put_if_absent(key, b"second", {"probe": "2"}):
            raise ArchiveAccessError(
                "conditional writes ignored (If-None-Match: * overwrote an object)",
                url=store.url,
                key=key,
            )
    finally:
        store.delete(key)
