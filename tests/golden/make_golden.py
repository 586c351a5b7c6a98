"""Generate the golden files that pin on-disk formats v1 and v2.

Run ``python tests/golden/make_golden.py`` to (re)write the files next to this script, or
``python tests/golden/make_golden.py --check`` to compare them without writing. The files
are committed: a change to their bytes is a format change and needs a new version.

Only ``segwal.format.layout`` functions (and BLAKE3 for the seal digest) build the bytes, from the
fixed inputs below; ``tests/test_format.py`` re-encodes the same inputs and compares.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import blake3

from segwal.format import framing
from segwal.format import layout as fmt

HERE = Path(__file__).resolve().parent

# Fixed inputs. Distinct, recognisable values so that a field at the wrong offset shows.
LOG_ID = bytes.fromhex("00112233445566778899aabbccddeeff")
T0 = 1_700_000_000_000_000  # 2023-11-14T22:13:20Z in microseconds
MAX_RECORD_BYTES = 1 << 24  # 16 MiB, the config default

# header_v1.bin: a later segment (sequence 2, first LSN 1000) with a non-zero prev digest.
HEADER_ARGS = {
    "log_id": LOG_ID,
    "sequence": 2,
    "first_lsn": 1000,
    "created_us": T0,
    "max_record_bytes": MAX_RECORD_BYTES,
    "prev_digest": bytes(range(0xA0, 0xC0)),
}

# Frames and the seal below are checksummed with the seed of header_v1.bin.
SINGLE_ARGS = {
    "lsn": 1000,
    "record_type": 7,
    "timestamp_us": T0 + 1,
    "durable_lsn": 999,
    "payload": b"hello, segwal",
}
BATCH_PAYLOADS = [b"alpha", b"", b"gamma-gamma"]
BATCH_ARGS = {
    "first_lsn": 1001,
    "record_type": 0xBEEF,
    "timestamp_us": T0 + 2,
    "durable_lsn": 1000,
    "payloads": BATCH_PAYLOADS,
    "lengths": [len(p) for p in BATCH_PAYLOADS],
}
SEAL_ARGS = {
    "first_lsn": 1000,
    "last_lsn": 1003,
    "count": 4,
    "min_ts": T0 + 1,
    "max_ts": T0 + 2,
    "data_end": 4096,
    "sealed_us": T0 + 3,
    "digest": bytes(range(0x40, 0x60)),
}

# segment_sealed_v1.bin: the first segment of a log, two batches, then its seal.
SEGMENT_HEADER_ARGS = {
    "log_id": LOG_ID,
    "sequence": 0,
    "first_lsn": 1,
    "created_us": T0,
    "max_record_bytes": MAX_RECORD_BYTES,
    "prev_digest": fmt.ZERO_DIGEST,
}
SEGMENT_BATCH1 = [b"hi", b"wal"]
SEGMENT_TS1 = T0 + 10
SEGMENT_TS2 = T0 + 20
SEGMENT_SEALED_US = T0 + 30


def header_v1() -> bytes:
    return fmt.encode_header(**HEADER_ARGS)  # type: ignore[arg-type]


def seed_v1() -> int:
    return fmt.decode_header(header_v1()).seed


def frame_single_v1() -> bytes:
    return bytes(framing.encode_record(seed_v1(), **SINGLE_ARGS))  # type: ignore[arg-type]


def frame_batch_v1() -> bytes:
    return bytes(framing.encode_frames(seed=seed_v1(), **BATCH_ARGS))  # type: ignore[arg-type]


def seal_v1() -> bytes:
    return fmt.encode_seal(seed=seed_v1(), **SEAL_ARGS)  # type: ignore[arg-type]


def segment_sealed_v1() -> bytes:
    """Header, batch [b"hi", b"wal"] at LSNs 1-2, batch [b"!"] at LSN 3, seal."""
    header = fmt.encode_header(**SEGMENT_HEADER_ARGS)  # type: ignore[arg-type]
    seed = fmt.decode_header(header).seed
    data = bytearray(header)
    data += framing.encode_frames(
        seed=seed,
        first_lsn=1,
        record_type=1,
        timestamp_us=SEGMENT_TS1,
        durable_lsn=0,
        payloads=SEGMENT_BATCH1,
        lengths=[len(p) for p in SEGMENT_BATCH1],
    )
    data += framing.encode_record(seed, 3, 1, SEGMENT_TS2, 2, b"!")
    data_end = len(data)
    data += fmt.encode_seal(
        seed=seed,
        first_lsn=1,
        last_lsn=3,
        count=3,
        min_ts=SEGMENT_TS1,
        max_ts=SEGMENT_TS2,
        data_end=data_end,
        sealed_us=SEGMENT_SEALED_US,
        digest=blake3.blake3(bytes(data[:data_end])).digest(),
    )
    return bytes(data)


# Version 2. A fixed AES-256-GCM key and nonce make the encrypted frame deterministic;
# compressed bytes depend on the codec library's version, so the compressed golden file is
# pinned by decoding it (tests/test_format_v2.py), not by re-encoding it.
V2_KEY = bytes(range(0x60, 0x80))
V2_SALT = bytes(range(0x10, 0x20))
V2_NONCE = bytes.fromhex("0102030405060708") + (0).to_bytes(4, "little")
V2_PAYLOADS = [b'{"id": 1, "event": "click"}' * 8, b"", b'{"id": 2, "event": "view"}' * 8]
HEADER_V2_ARGS = {**HEADER_ARGS, "compression_id": 2, "encryption_id": 1, "key_id": 7}


def _v2_key() -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from segwal.format.cipher import SegmentKey

    return SegmentKey(1, 7, V2_SALT, AESGCM(V2_KEY), lambda: V2_NONCE)


def header_v2() -> bytes:
    """Header v1's fields with lz4 (id 2) and AES-256-GCM (id 1), key id 7, salt 10..1f."""
    return fmt.encode_header(salt=V2_SALT, **HEADER_V2_ARGS)  # type: ignore[arg-type]


def _v2_batch(compressor: Any, key: Any) -> bytes:
    from segwal.format.frames import FrameEncoder

    head = fmt.decode_header(header_v2())
    return bytes(
        FrameEncoder(head, compressor, key).encode(
            first_lsn=1001,
            record_type=0xBEEF,
            timestamp_us=T0 + 2,
            durable_lsn=1000,
            payloads=V2_PAYLOADS,
            lengths=[len(p) for p in V2_PAYLOADS],
        )
    )


def frame_encrypted_v2() -> bytes:
    """The batch V2_PAYLOADS, LSNs 1001-1003, encrypted, not compressed."""
    return _v2_batch(None, _v2_key())


def frame_compressed_encrypted_v2() -> bytes:
    """The same batch compressed with lz4, then encrypted (decode-only golden file)."""
    from segwal.format.codecs import compressor

    return _v2_batch(compressor("lz4"), _v2_key())


# A zstd dictionary (trained on fixed samples: its bytes depend on the zstd version, so it
# and the frame compressed with it are decode-only), a header naming it, and one frame.
DICT_SAMPLES = [b'{"id": %d, "user": "user-%d", "event": "click"}' % (i, i * 7) for i in range(300)]
DICT_PAYLOAD = b'{"id": 4242, "user": "user-29694", "event": "click"}'


def dictionary_v2() -> bytes:
    """A dictionary file (docs/FORMAT.md, "Compression dictionary file") of 1 KiB."""
    from segwal.format import dictionary
    from segwal.format.codecs import train_dictionary

    return dictionary.encode(dictionary.make(train_dictionary(DICT_SAMPLES, 1024)))


def header_dict_v2() -> bytes:
    """Header v1's fields with zstd (id 1) and the dictionary id of dictionary_v2.zdict."""
    from segwal.format import dictionary

    stored = HERE / "dictionary_v2.zdict"
    data = stored.read_bytes() if stored.exists() else dictionary_v2()
    dict_id = dictionary.decode(data, "dictionary_v2").dict_id
    return fmt.encode_header(compression_id=1, dict_id=dict_id, **HEADER_ARGS)  # type: ignore[arg-type]


def frame_dict_v2() -> bytes:
    """DICT_PAYLOAD alone (LSN 1000), compressed with the dictionary: one opaque frame."""
    from segwal.format import dictionary
    from segwal.format.codecs import compressor
    from segwal.format.frames import FrameEncoder

    stored = HERE / "dictionary_v2.zdict"
    made = dictionary.decode(stored.read_bytes(), "dictionary_v2")
    head = fmt.decode_header(header_dict_v2())
    packer = compressor("zstd", 3, (made.dict_id, made.content))
    return bytes(
        FrameEncoder(head, packer, None).encode(
            first_lsn=1000,
            record_type=7,
            timestamp_us=T0 + 1,
            durable_lsn=999,
            payloads=[DICT_PAYLOAD],
            lengths=[len(DICT_PAYLOAD)],
        )
    )


GOLDEN = {
    "header_v1.bin": header_v1,
    "frame_single_v1.bin": frame_single_v1,
    "frame_batch_v1.bin": frame_batch_v1,
    "seal_v1.bin": seal_v1,
    "segment_sealed_v1.bin": segment_sealed_v1,
    "header_v2.bin": header_v2,
    "frame_encrypted_v2.bin": frame_encrypted_v2,
}
DECODE_ONLY = {
    "frame_compressed_encrypted_v2.bin": frame_compressed_encrypted_v2,
    "dictionary_v2.zdict": dictionary_v2,
    "header_dict_v2.bin": header_dict_v2,
    "frame_dict_v2.bin": frame_dict_v2,
}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    status = 0
    for name, build in {**GOLDEN, **DECODE_ONLY}.items():
        path = HERE / name
        data = build()
        if check:
            same = path.exists() and path.read_bytes() == data
            print(f"{name}: {'ok' if same else 'DIFFERS'}")
            status |= not same
        else:
            path.write_bytes(data)
            print(f"wrote {name} ({len(data)} bytes)")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
