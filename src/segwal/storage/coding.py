"""How a log encodes and decodes frames: its compressor and its key ring, one object.

The format layer knows the bytes (``format.frames``, ``format.codecs``, ``format.cipher``);
this module knows which segment gets which codec and key: a new segment takes the log's
compression and a new key from the ring; a resumed or rewritten segment keeps its header
(salt included) and gets a nonce source with a freshly drawn prefix (``writing=True``); a
reader gets the segment's key by the id and salt its header names, and its compression
dictionary by the id its header names (``storage.dictionaries``, read once when first needed).
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
from segwal.format.codecs import IDS, Compressor, compressor
from segwal.format.features import FRAME_COMPRESSED, HEADER_COMPRESSED, HEADER_ENCRYPTED
from segwal.format.frames import Buffer, FrameEncoder, Prepared, plain_body, prepare
from segwal.format.layout import FormatError, SegmentHeader
from segwal.format.scanner import Frame
from segwal.storage.dictionaries import Dictionaries

_CACHE_LIMIT = 1024  # segment keys kept for readers (HKDF is ~16 us a segment)


@dataclass(frozen=True, slots=True, eq=False)
class Coding:
    """The log's compressor (None: frames are stored raw), key ring (None: plaintext), the
    dictionaries of its directory (None: a segment that names one cannot be decoded), and
    how segments are written: ``preallocate`` bytes allocated at a time ahead of the tail
    (0: the file grows with each write), ``direct`` for O_DIRECT writes of whole blocks
    (docs/DURABILITY.md, "Preallocation" and "Direct I/O")."""

    compressor: Compressor | None = None
    keys: SegmentKeys | None = None
    dictionaries: Dictionaries | None = None
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

    @property
    def dictionary_id(self) -> int:
        """The dictionary id a new segment's header names (0: none)."""
        return self.compressor.dict_id if self.compressor is not None else 0

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
        if packer is not None and (
            packer.codec_id != header.compression_id or packer.dict_id != header.dict_id
        ):
            # Another codec or dictionary than this segment's: its frames are stored raw.
            packer = None
        return FrameEncoder(header, packer, key)

    def prepare(self, payloads: list[bytes], lengths: list[int]) -> Prepared | None:
        """The batch split and compressed, before the log lock (None: nothing to do, or
        payloads the encoder will refuse under the lock with the right error)."""
        if self.compressor is None or not payloads:
            return None
        if len(payloads) == 1 and 4 + lengths[0] <= self.compressor.min_input:
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
        if header.dict_id:
            self._dictionary(header, path)  # MissingDictionaryError / CorruptionError

    def plain_body(
        self, buf: Buffer, frame: Frame, header: SegmentHeader, path: str, offset: int
    ) -> tuple[Buffer, int, int]:
        """The frame's lengths table and payloads; errors name path, offset and LSN."""
        return self.opener(header, path).body(buf, frame, offset)

    def opener(self, header: SegmentHeader, path: str, *, reuse: bool = False) -> FrameOpener:
        """What opens the frames of one segment for one reader, frame after frame.

        ``reuse``: encrypted frames are decrypted into one buffer the opener keeps, so a
        body lies there only until the next frame is opened (the caller copies records out
        first); a body that must outlive that (a cached frame) is opened without it.
        """
        return FrameOpener(self, header, path, reuse)

    def _dictionary(self, header: SegmentHeader, path: str) -> object:
        if self.dictionaries is None:
            raise UnsupportedFormatError(
                f"{path} names compression dictionary {header.dict_id:#010x}: read it "
                "through its log directory",
                path=path,
            )
        return self.dictionaries.for_decoding(header.dict_id, path)

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


class FrameOpener:
    """The frames of one segment as one reader opens them: the segment's key is looked up
    once (at the first encrypted frame, where a missing key raises as it always did), and
    with ``reuse`` one scratch buffer holds each decrypted body in turn."""

    __slots__ = ("_coding", "_dictionary", "_header", "_key", "_path", "_scratch", "defers_crc")

    def __init__(self, coding: Coding, header: SegmentHeader, path: str, reuse: bool) -> None:
        self._coding = coding
        self._header = header
        self._path = path
        self._key: SegmentKey | None = None
        self._dictionary: object | None = None  # looked up at the first frame that needs it
        self._scratch: memoryview | None = memoryview(bytearray()) if reuse else None
        # With the key ring at hand, every encrypted frame is authenticated before it is
        # used, so the scanner may leave its CRC to the tag (``scanner.check``).
        self.defers_crc = coding.keys is not None and bool(header.flags & HEADER_ENCRYPTED)

    def body(self, buf: Buffer, frame: Frame, offset: int) -> tuple[Buffer, int, int]:
        """The frame's lengths table and payloads; errors name path, offset and LSN."""
        header = self._header
        key = self._key
        if key is None and frame.opaque and header.flags & HEADER_ENCRYPTED:
            key = self._key = self._coding._key(header, self._path, writing=False)
        dictionary = self._dictionary
        if dictionary is None and frame.opaque & FRAME_COMPRESSED and header.dict_id:
            dictionary = self._dictionary = self._coding._dictionary(header, self._path)
        scratch = self._scratch
        if scratch is not None and len(scratch) < frame.length:
            # Grown to the largest frame seen: a body is never larger than its frame.
            scratch = self._scratch = memoryview(bytearray(frame.length))
        try:
            return plain_body(buf, frame, header, key, self._path, scratch, dictionary)
        except AuthenticationFailed as exc:
            raise AuthenticationError(
                exc.reason, path=self._path, offset=offset, lsn=frame.first_lsn
            ) from None
        except FormatError as exc:
            if exc.newer:
                raise UnsupportedFormatError(
                    f"{self._path}: {exc.reason}",
                    path=self._path,
                    hint="upgrade segwal to read this log",
                ) from None
            raise CorruptionError(
                exc.reason, path=self._path, offset=offset, lsn=frame.first_lsn
            ) from None


PLAIN = Coding()
