"""S3 and S3-compatible stores (``s3://bucket/prefix``) through boto3 (extra ``segwal[s3]``).

Why boto3: tested against Ceph RGW here, plain HTTP and TLS, next to obstore 0.12. Both do
``If-None-Match: *`` (412), ranged GETs and ``start-after`` listings; boto3 also gives the
metadata on a HEAD (obstore's ``head`` drops it, so checking a segment's recorded digest
would cost a GET) and raises errors with the S3 code and HTTP status, which the mapping
below needs. Its import (~0.3 s) is paid only when an ``s3://`` archive is opened.

Settings that matter against servers that are not AWS:

- ``request_checksum_calculation`` and ``response_checksum_validation`` are
  ``when_required``: botocore's default sends aws-chunked bodies with a trailing checksum
  that Ceph refuses over TLS (``MissingContentLength``). The body is protected instead by
  ``Content-MD5``, which every S3 server checks (``BadDigest``).
- Path-style addressing for a custom endpoint (a local server has no per-bucket DNS names).
- Bounded time: connect and read timeouts and at most ``max_attempts`` tries per request,
  so a dead endpoint fails in seconds; retry policy beyond that is the caller's.

A HEAD answers 404 without a body, so ``head`` on a missing *bucket* is ``None`` like a
missing key; every other call names ``NoSuchBucket``, and the probe at open catches it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import botocore.session

from segwal.archive.store import ObjectInfo
from segwal.errors import (
    ArchiveAccessError,
    ArchiveError,
    ArchiveNotFoundError,
    ArchiveUnavailableError,
)

# Errors that retrying cannot fix: credentials, signatures, permissions, the bucket.
ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidToken",
        "TokenRefreshRequired",
        "RequestExpired",
        "AccountProblem",
        "NoSuchBucket",
        "InvalidBucketName",
        "PermanentRedirect",
        "AuthorizationHeaderMalformed",
    }
)
# 4xx answers that a retry can fix: throttling, a body damaged or cut on the way.
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "BadDigest",
        "IncompleteBody",
        "XAmzContentSHA256Mismatch",
        "ConditionalRequestConflict",
        "OperationAborted",
        "ServiceUnavailable",
        "InternalError",
    }
)
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s\"']*@")


def redact(text: str) -> str:
    """``text`` with the ``user:password@`` of any URL in it replaced by ``***@``: an
    endpoint given with credentials never puts them in an error message or a log."""
    return _USERINFO.sub(r"\1***@", text)


class S3Store:
    """An :class:`~segwal.archive.store.ObjectStore` on one bucket under one key prefix.

    Endpoint, credentials, region and CA bundle come from the standard AWS environment
    (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``, ``AWS_CA_BUNDLE``, ``AWS_PROFILE``) and
    config files unless given here. ``connect_timeout`` and ``read_timeout`` are seconds
    per attempt; ``max_attempts`` counts the first try.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        ca_bundle: str | None = None,
        verify: bool = True,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 2,
        max_connections: int = 16,
    ) -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.bucket = bucket
        self.prefix = prefix
        self.url = f"s3://{bucket}/{prefix}"
        try:
            core = botocore.session.get_session()
            session = boto3.session.Session(botocore_session=core, profile_name=profile)
            endpoint = endpoint_url or core.get_config_variable("endpoint_url")
            config = botocore.config.Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"total_max_attempts": max_attempts, "mode": "standard"},
                max_pool_connections=max_connections,
                s3={"addressing_style": "path" if endpoint else "auto"},
            )
            self.client: Any = session.client(
                "s3",
                endpoint_url=endpoint_url,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                aws_session_token=session_token,
                region_name=region,
                verify=(ca_bundle or None) if verify else False,
                config=config,
            )
        except botocore.exceptions.BotoCoreError as exc:
            raise ArchiveAccessError(
                f"cannot configure the S3 client: {redact(str(exc))}", url=self.url
            ) from None
        except ValueError as exc:  # boto3's "Invalid endpoint" (no scheme, not a URL)
            raise ArchiveAccessError(
                f"the S3 endpoint {redact(str(endpoint_url))!r} is not a URL "
                f"(http://host:port or https://host): {redact(str(exc))}",
                url=self.url,
            ) from None
        self.endpoint: str = redact(self.client.meta.endpoint_url)

    # -- errors ----------------------------------------------------------------------

    def _error(self, exc: Exception, key: str | None) -> ArchiveError:
        """A client exception as the archive's typed error (see store.py)."""
        if isinstance(exc, botocore.exceptions.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            what = f"S3 {code or status} (HTTP {status}) at {self.endpoint}"
            if code in TRANSIENT_CODES or (isinstance(status, int) and status >= 500):
                return ArchiveUnavailableError(what, url=self.url, key=key, status=status)
            if code in ACCESS_CODES or status in (401, 403):
                return ArchiveAccessError(what, url=self.url, key=key)
            if code == "NoSuchKey" or status == 404:
                return ArchiveNotFoundError(what, url=self.url, key=key)
            return ArchiveAccessError(what, url=self.url, key=key)
        if isinstance(exc, botocore.exceptions.NoCredentialsError | _PartialCredentials):
            return ArchiveAccessError(
                f"no S3 credentials: {redact(str(exc))}", url=self.url, key=key
            )
        if isinstance(exc, botocore.exceptions.SSLError):
            return ArchiveAccessError(
                f"TLS failed (CA bundle?): {redact(str(exc))}", url=self.url, key=key
            )
        return ArchiveUnavailableError(
            f"{type(exc).__name__}: {redact(str(exc))}", url=self.url, key=key
        )

    @staticmethod
    def _status(exc: botocore.exceptions.ClientError) -> int | None:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status if isinstance(status, int) else None

    def _put(self, key: str, data: bytes, metadata: Mapping[str, str] | None, **extra: Any) -> None:
        digest = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.prefix + key,
            Body=data,
            ContentMD5=digest,
            Metadata=dict(metadata or {}),
            **extra,
        )

    # -- the protocol ----------------------------------------------------------------

    def put_if_absent(
        self, key: str, data: bytes, metadata: Mapping[str, str] | None = None
    ) -> bool:
        try:
            self._put(key, data, metadata, IfNoneMatch="*")
        except botocore.exceptions.ClientError as exc:
            if self._status(exc) == 412:
                return False
            raise self._error(exc, key) from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise self._error(exc, key) from exc
        return True

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        try:
            self._put(key, data, metadata)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, OSError) as exc:
            raise self._error(exc, key) from exc

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        if start < 0 or (end is not None and end < start):
            raise ArchiveError(f"invalid range {start}..{end}", url=self.url, key=key)
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": self.prefix + key}
        if end is not None:
            # An empty range still asks for a byte, so a missing key is reported.
            request["Range"] = f"bytes={start}-{max(start, end - 1)}"
        elif start:
            request["Range"] = f"bytes={start}-"
        try:
            answer = self.client.get_object(**request)
            body: bytes = answer["Body"].read()
        except botocore.exceptions.ClientError as exc:
            if self._status(exc) == 416:  # the range starts at or past the end
                return b""
            raise self._error(exc, key) from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise self._error(exc, key) from exc
        if end == start:
            return b""
        expected = answer.get("ContentLength")
        if expected is not None and len(body) != expected:
            raise ArchiveUnavailableError(
                f"short body: {len(body)} of {expected} bytes", url=self.url, key=key
            )
        if "Range" in request:
            self._check_range(key, answer.get("ContentRange"), start, end, len(body))
        return body

    def _check_range(
        self, key: str, content_range: str | None, start: int, end: int | None, got: int
    ) -> None:
        """The server's answer to a ranged GET covers what was asked (clipped at the end)."""
        match = CONTENT_RANGE.fullmatch(content_range or "")
        if match is None:
            raise ArchiveUnavailableError(
                f"ranged GET answered without a valid Content-Range ({content_range!r})",
                url=self.url,
                key=key,
            )
        first, last, total = match.groups()
        stop = int(last) + 1
        wanted = stop if end is None else min(end, stop if total == "*" else int(total))
        if int(first) != start or stop != wanted or got != stop - start:
            raise ArchiveUnavailableError(
                f"ranged GET for {start}..{end} answered {content_range} with {got} bytes",
                url=self.url,
                key=key,
            )

    def head(self, key: str) -> ObjectInfo | None:
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except botocore.exceptions.ClientError as exc:
            if self._status(exc) == 404:
                return None
            raise self._error(exc, key) from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise self._error(exc, key) from exc
        return ObjectInfo(key=key, size=answer["ContentLength"], metadata=answer["Metadata"])

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        if start_after:
            request["StartAfter"] = self.prefix + start_after
        cut = len(self.prefix)
        while True:
            try:
                page = self.client.list_objects_v2(**request)
            except (
                botocore.exceptions.ClientError,
                botocore.exceptions.BotoCoreError,
                OSError,
            ) as exc:
                raise self._error(exc, None) from exc
            for entry in page.get("Contents", []):
                yield ObjectInfo(key=entry["Key"][cut:], size=entry["Size"])
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            request["ContinuationToken"] = token

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        except botocore.exceptions.ClientError as exc:
            if self._status(exc) == 404 and exc.response["Error"].get("Code") != "NoSuchBucket":
                return
            raise self._error(exc, key) from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise self._error(exc, key) from exc

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, endpoint={self.endpoint!r})"


_PartialCredentials = botocore.exceptions.PartialCredentialsError
