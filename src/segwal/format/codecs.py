"""Frame compression codecs of format version 2: zstd and lz4, one frame at a time.

Each frame is compressed alone (no state carried from one frame to the next; a zstd frame
may use a static trained dictionary its segment header names, ``format.dictionary``), so a
torn tail, a point read and a partial restore decode any frame by itself. Decompression
is bounded by the plain size the frame stores, and the frame scanner has bounded that size
by the segment's maximum frame size before anything here runs: a lying size or a
decompression bomb raises ``FormatError`` after at most that many bytes, never allocates more.

The codec libraries are optional: zstd is ``compression.zstd`` from Python 3.14 and
``backports.zstd`` below it (``pip install 'segwal[zstd]'``), lz4 is ``lz4.block``
(``pip install 'segwal[lz4]'``). A missing one raises ``UnsupportedFormatError`` with that
hint, when a log is opened to write with it and when a frame needs it to be read.
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType
from typing import Any, Final, Protocol

from segwal.errors import UnsupportedFormatError
from segwal.format.features import COMPRESSION_LZ4, COMPRESSION_ZSTD
from segwal.format.layout import FormatError

NAMES: Final = {"zstd": COMPRESSION_ZSTD, "lz4": COMPRESSION_LZ4}
IDS: Final = {v: k for k, v in NAMES.items()}
# Levels each codec accepts, and the default. zstd 3 (its own default): on 64 JSON-like
# records of 1 KiB it measured both faster than level 1 (96 vs 115 us a frame) and smaller
# (ratio 5.0 vs 4.5) with backports.zstd 1.8 here; the fast levels -1..-7 were slower still
# on that text (136-167 us) and smaller ratios (4.3-3.9): benchmarks/README.md. lz4 0 is
# its fast mode, 1..12 its high-compression levels.
LEVELS: Final = {"zstd": (-7, 22, 3), "lz4": (0, 12, 0)}
_MODULES: Final = {"zstd": ("compression.zstd", "backports.zstd"), "lz4": ("lz4.block",)}
# Keep a compressed frame only when it saves this much: decompressing a frame that is a
# few bytes smaller is a tax on every read for nothing.
MIN_SAVING_FRACTION: Final = 8  # 1/8 of the plain body
MIN_SAVING_BYTES: Final = 64
MIN_INPUT_BYTES: Final = 2 * MIN_SAVING_BYTES  # smaller bodies are not even tried
# With a trained dictionary a single small record compresses (100 B JSON-like: 2.4x, where
# plain zstd saves 6%), and a dictionary frame decodes in a few us: the bar for "worth it"
# is lower in bytes, still an eighth of the body (benchmarks/README.md, dictionary rows).
DICT_MIN_SAVING_BYTES: Final = 16
DICT_MIN_INPUT_BYTES: Final = 32


class Compressor(Protocol):
    """Compresses one frame body at a time, without state from one call to the next."""

    codec_id: int
    dict_id: int  # 0: no dictionary
    min_input: int  # bodies this small are stored raw without trying
    min_saving: int  # bytes a compressed body must save to be kept

    def compress(self, data: bytes | bytearray) -> bytes: ...


def hint(name: str) -> str:
    return f"pip install 'segwal[{name}]'"


def _find(modules: tuple[str, ...]) -> ModuleType | None:
    for module in modules:
        try:
            return importlib.import_module(module)
        except ImportError:
            continue
    return None


# Found once: a failed import searches the file system again on every call, per frame.
_found: dict[tuple[str, ...], ModuleType | None] = {}


def _load(name: str, path: str | None = None) -> ModuleType:
    modules = _MODULES[name]
    if modules not in _found:
        _found[modules] = _find(modules)
    found = _found[modules]
    if found is not None:
        return found
    where = f"{path}: " if path else ""
    raise UnsupportedFormatError(
        f"{where}the {name} codec is not installed", path=path, hint=hint(name)
    )


class _Zstd:
    codec_id = COMPRESSION_ZSTD

    def __init__(self, level: int, dictionary: tuple[int, bytes] | None = None) -> None:
        self._module = _load("zstd")
        self._level = level
        self.dict_id = 0
        self.min_input, self.min_saving = MIN_INPUT_BYTES, MIN_SAVING_BYTES
        self._dict: Any = None
        if dictionary is not None:
            self.dict_id, content = dictionary
            self._dict = self._module.ZstdDict(content)
            self.min_input, self.min_saving = DICT_MIN_INPUT_BYTES, DICT_MIN_SAVING_BYTES
        self._end = self._module.ZstdCompressor.FLUSH_FRAME
        # One compressor per thread, reused for every frame (saves ~5 us a call): writers
        # compress before taking the log lock, so threads must not share one. FLUSH_FRAME
        # ends each call with a whole zstd frame and resets the state: frames stay
        # independent.
        self._local = threading.local()

    def compress(self, data: bytes | bytearray) -> bytes:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = self._local.compressor = self._module.ZstdCompressor(
                self._level, zstd_dict=self._dict
            )
        out: bytes = compressor.compress(data, self._end)
        return out


class _Lz4:
    codec_id = COMPRESSION_LZ4
    dict_id = 0
    min_input = MIN_INPUT_BYTES
    min_saving = MIN_SAVING_BYTES

    def __init__(self, level: int) -> None:
        self._block = _load("lz4")
        self._args: dict[str, Any] = (
            {"mode": "high_compression", "compression": level} if level else {"mode": "default"}
        )

    def compress(self, data: bytes | bytearray) -> bytes:
        out: bytes = self._block.compress(data, store_size=False, **self._args)
        return out


def installed(codec_id: int) -> bool:
    """Whether the library of this codec id can be imported."""
    name = IDS.get(codec_id)
    if name is None:
        return False
    modules = _MODULES[name]
    if modules not in _found:
        _found[modules] = _find(modules)
    return _found[modules] is not None


def compressor(
    name: str, level: int | None = None, dictionary: tuple[int, bytes] | None = None
) -> Compressor:
    """A compressor for ``name`` ("zstd" or "lz4"), zstd optionally with a trained
    ``(dictionary id, content)``; raises UnsupportedFormatError if the codec is not
    installed (so a log opened to write with it fails at open)."""
    low, high, default = LEVELS[name]
    level = default if level is None else level
    if not low <= level <= high:
        raise ValueError(f"{name} levels are {low}..{high}, not {level}")
    if dictionary is not None and name != "zstd":
        raise ValueError(f"only zstd uses compression dictionaries, not {name}")
    return _Zstd(level, dictionary) if name == "zstd" else _Lz4(level)


def worth_it(plain: int, stored: int, min_saving: int = MIN_SAVING_BYTES) -> bool:
    """Whether a compressed body saves enough to be kept (else the frame is stored raw)."""
    saved = plain - stored
    return saved >= min_saving and saved * MIN_SAVING_FRACTION >= plain


def train_dictionary(samples: list[bytes], size: int) -> bytes:
    """A zstd dictionary of at most ``size`` bytes trained on ``samples`` (records like the
    ones it will compress); ValueError when zstd cannot train one from them."""
    module = _load("zstd")
    try:
        trained = module.train_dict(samples, size)
    except module.ZstdError as exc:
        raise ValueError(f"zstd could not train a dictionary: {exc}") from None
    content: bytes = trained.dict_content
    return content


def decoding_dictionary(content: bytes, path: str | None = None) -> object:
    """A dictionary prepared for ``decompress`` (made once per dictionary, not per frame)."""
    return _load("zstd", path).ZstdDict(content)


def decompress(
    codec_id: int,
    data: bytes | memoryview,
    size: int,
    path: str | None,
    dictionary: object | None = None,
) -> bytes:
    """The ``size`` plain bytes of one compressed body; FormatError if it holds any other
    amount (checked while decoding: at most ``size`` bytes are ever produced).
    ``dictionary`` (from ``decoding_dictionary``) for a segment that names one."""
    name = IDS.get(codec_id)
    if name is None:
        raise FormatError(f"unknown compression id {codec_id}", newer=True)
    module = _load(name, path)
    try:
        if name == "lz4":
            out: bytes = module.decompress(data, uncompressed_size=size)
        else:
            decompressor = module.ZstdDecompressor(zstd_dict=dictionary)
            # max_length bounds the output buffer: a bomb stops at ``size`` bytes.
            out = decompressor.decompress(data, max_length=size)
            if not decompressor.eof or decompressor.unused_data:
                raise FormatError(f"compressed body does not end after {size} plain bytes")
    except FormatError:
        raise
    except Exception as exc:  # each library has its own error type for bad input
        raise FormatError(f"compressed body does not decode ({name}: {exc})") from None
    if len(out) != size:
        raise FormatError(f"compressed body holds {len(out)} bytes, its frame says {size}")
    return out
