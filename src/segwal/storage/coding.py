"""How a log encodes and decodes frames: its compressor and its key ring, one object.

The format layer knows the bytes (``format.frames``, ``format.codecs``, ``format.cipher``);
this module knows which segment gets which codec and key: a new segment takes the log's
compression and a new key from the ring; a resumed or rewritten segment keeps its header
(salt included) and gets a nonce source with a freshly drawn prefix (``writing=True``); a
reader gets the segment's key by the id and salt its header names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from segwal.errors import (
    AuthenticationError,
    CorruptionError,
    MissingKeyError,
    UnsupportedFormatError,
)
from segwal.format.cipher import AuthenticationFailed, SegmentKey, SegmentKeys
from segwal.format.codecs import IDS, MIN_INPUT_BYTES, Compressor, compressor
from segwal.format.features import HEADER_COMPRESSED, HEADER_ENCRYPTED
from segwal.format.frames import Buffer, FrameEncoder, Prepared, plain_body, prepare
from segwal.format.layout import FormatError, SegmentHeader
from segwal.format.scanner import Frame

_CACHE_LIMIT = 1024  # segment keys kept for readers (HKDF is ~16 us a segment)


@dataclass(frozen=True, slots=True, eq=False)
class Coding:
    """The log's compressor (None: frames are stored raw) and key ring (None: plaintext),
    and how segments are written: ``preallocate`` bytes allocated at a time ahead of the
    tail (0: the file grows with each write), ``direct`` for O_DIRECT writes of whole
    blocks (docs/DURABILITY.md, "Preallocation" and "Direct I/O")."""

    compressor: Compressor | None = None
    keys: SegmentKeys | None = None
    preallocate: int = 0
    direct: bool = False  # direct_io=True: O_DIRECT writes of whole blocks (implies preallocate)
    _read_keys: dict[tuple[bytes, int, int, bytes], SegmentKey] = field(
        default_factory=dict, repr=False
    )

    @property
    def plain(self) -> bool:
        return self.compressor is None and self.keys is None

    def new_segment(
        self, log_id: bytes, sequence: int, first_lsn: int
    ) -> tuple[int, SegmentKey | None]:
        """The compression id and the key of a segment about to be created."""
        key = None
        if self.keys is not None:
            key = self.keys.for_new_segment(log_id, sequence, first_lsn)
        return (self.compressor.codec_id if self.compressor else 0), key

    def encoder(
        self, header: SegmentHeader, key: SegmentKey | None = None, *, path: str = ""
    ) -> FrameEncoder | None:
        """The encoder of a segment with this header (None: version 1 frames).

        Without ``key``, an encrypted segment's key is asked for with ``writing=True``:
        the writer resumes or rewrites it and needs a freshly drawn nonce prefix.
        """
        if not header.flags & (HEADER_COMPRESSED | HEADER_ENCRYPTED):
            return None
        if header.flags & HEADER_ENCRYPTED and key is None:
            key = self._key(header, path, writing=True)
        packer = self.compressor
        if packer is not None and packer.codec_id != header.compression_id:
            # Another codec than this segment's: frames of this segment are stored raw.
            packer = None
        return FrameEncoder(header, packer, key)

    def prepare(self, payloads: list[bytes], lengths: list[int]) -> Prepared | None:
        """The batch split and compressed, before the log lock (None: nothing to do, or
        payloads the encoder will refuse under the lock with the right error)."""
        if self.compressor is None or not payloads:
            return None
        if len(payloads) == 1 and 4 + lengths[0] <= MIN_INPUT_BYTES:
            return None  # too small to try: stored raw (a version 1 frame)
        try:
            return prepare(self.compressor, payloads, lengths)
        except (TypeError, ValueError):
            return None

    def check_rewrite(self, header: SegmentHeader, path: str) -> None:
        """Raise the typed error that re-encoding frames of this segment would raise (a
        missing key or codec) before anything is changed."""
        if header.flags & HEADER_ENCRYPTED:
            self._key(header, path, writing=False)
        if header.flags & HEADER_COMPRESSED:
            compressor(IDS[header.compression_id])  # UnsupportedFormatError if missing

    def plain_body(
        self, buf: Buffer, frame: Frame, header: SegmentHeader, path: str, offset: int
    ) -> tuple[Buffer, int, int]:
        """The frame's lengths table and payloads; errors name path, offset and LSN."""
        key = None
        if frame.opaque and header.flags & HEADER_ENCRYPTED:
            key = self._key(header, path, writing=False)
        try:
            return plain_body(buf, frame, header, key, path)
        except AuthenticationFailed as exc:
            raise AuthenticationError(
                exc.reason, path=path, offset=offset, lsn=frame.first_lsn
            ) from None
        except FormatError as exc:
            if exc.newer:
                raise UnsupportedFormatError(
                    f"{path}: {exc.reason}", path=path, hint="upgrade segwal to read this log"
                ) from None
            raise CorruptionError(
                exc.reason, path=path, offset=offset, lsn=frame.first_lsn
            ) from None

    def _key(self, header: SegmentHeader, path: str, *, writing: bool) -> SegmentKey:
        if self.keys is None:
            raise MissingKeyError(
                f"{path} is encrypted (log key {header.key_id}): open the log with its key",
                path=path,
                key_id=header.key_id,
            )
        args = (header.log_id, header.sequence, header.first_lsn, header.key_id, header.salt)
        if writing:
            return self.keys.for_segment(*args, writing=True)
        cache_key = (header.log_id, header.sequence, header.key_id, header.salt)
        found = self._read_keys.get(cache_key)
        if found is None:
            found = self.keys.for_segment(*args, writing=False)
            if len(self._read_keys) >= _CACHE_LIMIT:
                self._read_keys.clear()
            self._read_keys[cache_key] = found
        return found


PLAIN = Coding()
