"""Compressed and encrypted logs end to end: appends, reads, rewinds, recovery cuts and
reopening, with real zstd/lz4 and real AES-256-GCM, on the real file system."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

import segwal
from cipherkeys import CounterKeys
from conftest import forget_clean_close
from helpers_logs import segment_files, snapshot
from segwal.errors import (
    AuthenticationError,
    ConfigError,
    MissingKeyError,
    UnsupportedFormatError,
)
from segwal.format import codecs
from segwal.format.features import FRAME_COMPRESSED, HEADER_ENCRYPTED
from segwal.format.layout import FRAME_HEAD, crc32c, decode_header
from segwal.log.config import WalConfig
from segwal.log.wal import Wal


def records(n: int, size: int = 200) -> list[bytes]:
    return [(b'{"n": %d, "text": "' % i + b"lorem ipsum " * (size // 12))[:size] for i in range(n)]


def open_log(path: str, **options: object) -> Wal:
    return Wal(path, WalConfig(sync="never", segment_bytes=16 << 10, **options))  # type: ignore[arg-type]


def replay(wal: Wal) -> list[bytes]:
    return [r.payload for r in wal.replay(wal.first_lsn, unsynced=True)]


@pytest.mark.parametrize("compression", [None, "zstd", "lz4"])
@pytest.mark.parametrize("encrypted", [False, True])
def test_a_log_round_trips_through_rotation_rewind_and_reopen(
    wal_dir: str, compression: str | None, encrypted: bool
) -> None:
    keys = CounterKeys() if encrypted else None
    data = records(400)
    wal = open_log(wal_dir, compression=compression, keys=keys)
    wal.append_batch(data[:150])
    for item in data[150:300]:
        wal.append(item)
    wal.append_batch(data[300:])
    assert replay(wal) == data
    wal.truncate_after(320)  # inside the last batch: re-encoded with the key and codec
    assert replay(wal) == data[:320]
    wal.append_batch(data[320:])
    wal.close()
    wal = open_log(wal_dir, compression=compression, keys=keys)
    assert replay(wal) == data
    assert wal.read(77, unsynced=True).payload == data[76]
    wal.close()
    headers = [decode_header(p.read_bytes()[:128]) for p in segment_files(wal_dir)]
    assert all(h.version == (2 if compression or encrypted else 1) for h in headers)
    assert all(bool(h.flags & HEADER_ENCRYPTED) == encrypted for h in headers)
    assert segwal.verify(wal_dir).ok  # checksums and chain need no key


def test_zstd_stores_json_like_batches_in_far_fewer_bytes(tmp_path: Path) -> None:
    sizes = {}
    for name in ("plain", "zstd"):
        wal = open_log(str(tmp_path / name), compression=None if name == "plain" else "zstd")
        for start in range(0, 640, 64):
            wal.append_batch(records(64, 1024)[start // 64 :][:64])
        wal.close()
        sizes[name] = sum(p.stat().st_size for p in segment_files(tmp_path / name))
    assert sizes["zstd"] * 3 < sizes["plain"]


def _tamper(path: Path, offset: int, delta_at: int) -> None:
    """Flip one byte of the frame at ``offset`` and give it a valid CRC again."""
    raw = bytearray(path.read_bytes())
    seed = decode_header(bytes(raw[:128])).seed
    length = FRAME_HEAD.unpack_from(raw, offset)[5] + 40
    raw[offset + delta_at] ^= 0x40
    struct.pack_into("<I", raw, offset, crc32c(bytes(raw[offset + 4 : offset + length]), seed))
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(("delta_at", "what"), [(6, "record type"), (100, "ciphertext")])
def test_tampering_is_an_authentication_error_naming_the_frame(
    wal_dir: str, delta_at: int, what: str
) -> None:
    keys = CounterKeys()
    wal = open_log(wal_dir, keys=keys)
    wal.append_batch(records(10))
    wal.close()
    forget_clean_close(wal_dir)
    segment = segment_files(wal_dir)[0]
    _tamper(segment, 128, delta_at)
    wal = open_log(wal_dir, keys=keys)  # the CRC is valid: recovery cuts nothing
    with pytest.raises(AuthenticationError) as info:
        replay(wal)
    assert (info.value.path, info.value.offset, info.value.lsn) == (str(segment), 128, 1)
    wal.close()


def test_a_frame_swapped_in_from_another_segment_does_not_authenticate(tmp_path: Path) -> None:
    keys = CounterKeys()
    logs = []
    for name in ("a", "b"):
        wal = open_log(str(tmp_path / name), keys=keys)
        wal.append_batch(records(5))
        wal.close()
        logs.append(segment_files(tmp_path / name)[0])
    a, b = (bytearray(p.read_bytes()) for p in logs)
    seed = decode_header(bytes(a[:128])).seed
    length = FRAME_HEAD.unpack_from(b, 128)[5] + 40
    frame = bytearray(b[128 : 128 + length])
    struct.pack_into("<I", frame, 0, crc32c(bytes(frame[4:]), seed))  # valid CRC in a
    logs[0].write_bytes(bytes(a[:128] + frame))
    forget_clean_close(tmp_path / "a")
    wal = open_log(str(tmp_path / "a"), keys=keys)
    with pytest.raises(AuthenticationError):
        replay(wal)
    wal.close()


def test_an_encrypted_log_without_its_key_is_refused_and_unchanged(wal_dir: str) -> None:
    wal = open_log(wal_dir, keys=CounterKeys())
    wal.append_batch(records(10))
    wal.close()
    before = snapshot(wal_dir)
    with pytest.raises(MissingKeyError):
        open_log(wal_dir)
    reader = Wal(wal_dir, WalConfig(readonly=True))
    with pytest.raises(MissingKeyError):
        replay(reader)
    reader.close()
    assert snapshot(wal_dir) == before


def test_keys_given_to_a_plaintext_log_seal_its_tail_and_encrypt_what_follows(
    wal_dir: str,
) -> None:
    data = records(40)
    wal = open_log(wal_dir)
    wal.append_batch(data[:20])
    wal.close()
    keys = CounterKeys()
    wal = open_log(wal_dir, keys=keys)
    wal.append_batch(data[20:])
    assert replay(wal) == data
    wal.close()
    headers = [decode_header(p.read_bytes()[:128]) for p in segment_files(wal_dir)]
    assert [bool(h.flags & HEADER_ENCRYPTED) for h in headers] == [False, True]


def test_nonces_never_repeat_across_resume_cut_and_rewind(wal_dir: str) -> None:
    keys = CounterKeys()
    data = records(60)
    wal = open_log(wal_dir, keys=keys)
    wal.append_batch(data[:30])
    wal.close()
    for _round in range(3):
        wal = open_log(wal_dir, keys=keys)  # resume: the same segment key, a new prefix
        wal.append_batch(data[30:40])
        wal.truncate_after(wal.last_lsn - 5)  # re-encoded: the same LSNs, other nonces
        wal.close()
    assert len(set(keys.used)) == len(keys.used) == 7
    # The check looks at how prefixes are drawn: a writer keeping its prefix is caught.
    faulty = CounterKeys(keep_prefix=True)
    path = wal_dir + "-faulty"
    for _round in range(2):
        wal = open_log(path, keys=faulty)
        wal.append_batch(data[:5])
        wal.truncate_after(2)
        wal.close()
    assert len(set(faulty.used)) < len(faulty.used)


def test_a_missing_codec_names_the_pip_command(
    wal_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = open_log(wal_dir, compression="zstd")
    wal.append_batch(records(64, 1024))
    wal.close()
    segment = segment_files(wal_dir)[0]
    assert segment.read_bytes()[128 + 5] & FRAME_COMPRESSED
    monkeypatch.setitem(codecs._MODULES, "zstd", ("segwal_test_absent_zstd",))
    with pytest.raises(UnsupportedFormatError, match=r"pip install 'segwal\[zstd\]'"):
        open_log(wal_dir + "-new", compression="zstd")
    wal = open_log(wal_dir)  # writing raw frames needs no codec; reading them does
    with pytest.raises(UnsupportedFormatError, match=r"pip install 'segwal\[zstd\]'"):
        replay(wal)
    before = snapshot(wal_dir)
    with pytest.raises(UnsupportedFormatError):
        wal.truncate_after(10)  # inside a compressed batch: refused before any change
    assert snapshot(wal_dir) == before
    wal.close()


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"compression": "gzip"}, ConfigError),
        ({"compression": 1}, TypeError),
        ({"compression": "zstd", "compression_level": 99}, ConfigError),
        ({"compression": "lz4", "compression_level": "9"}, TypeError),
        ({"compression_level": 3}, ConfigError),
    ],
)
def test_compression_options_are_checked(
    wal_dir: str, options: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        segwal.open(wal_dir, **options)  # type: ignore[arg-type]
    assert not os.path.exists(wal_dir)


def test_verify_authenticates_with_keys_and_checks_crcs_without(wal_dir: str) -> None:
    from segwal.storage.coding import Coding
    from segwal.storage.fileio import OsFileSystem
    from segwal.storage.verify import verify_directory

    keys = CounterKeys()
    wal = open_log(wal_dir, keys=keys, compression="zstd")
    wal.append_batch(records(64))
    wal.close()
    fs = OsFileSystem()
    assert verify_directory(fs, wal_dir, Coding(keys=keys)).ok
    segment = segment_files(wal_dir)[0]
    _tamper(segment, 128, 100)
    assert segwal.verify(wal_dir).ok  # the CRC is valid: without the key nothing shows
    report = verify_directory(fs, wal_dir, Coding(keys=keys))
    assert not report.ok
    (problem,) = report.problems
    assert (problem.path, problem.offset, problem.lsn) == (str(segment), 128, 1)
    assert "authenticate" in problem.reason


def test_verify_decompresses_compressed_frames(wal_dir: str) -> None:
    wal = open_log(wal_dir, compression="lz4")
    wal.append_batch(records(64))
    wal.close()
    segment = segment_files(wal_dir)[0]
    _tamper(segment, 128, 40)  # a forged CRC over a plain size 64 bytes off
    report = segwal.verify(wal_dir)
    assert not report.ok and report.problems[0].offset == 128


def _nonce_run(keys: CounterKeys, *, preallocate: bool = False, direct: bool = False) -> int:
    """An encrypted workload on the in-memory file system; then, at every operation, up to
    three crash images recovered, appended to and rewound. Returns how many images."""
    from segwal.testing import MemoryFileSystem

    def open_mem(fs: MemoryFileSystem) -> Wal:
        config = WalConfig(
            filesystem=fs,
            keys=keys,
            sync="never",
            segment_bytes=1024,
            preallocate=preallocate,
            direct_io=direct,
        )
        return Wal("/log", config)

    fs = MemoryFileSystem()
    wal = open_mem(fs)
    data = records(12, 60)
    wal.append_batch(data[:6])
    wal.sync()
    wal.append_batch(data[6:])
    wal.truncate_after(wal.last_lsn - 3)
    wal.append(data[0])
    wal.close()
    images = 0
    for k in range(0, fs.op_count + 1, 2):
        for image in fs.replay(k).crash_states(seed=k, limit=3, random_subsets=2):
            try:
                again = open_mem(image)
            except segwal.CorruptionError:
                continue  # damage the fault model does not allow is another test's business
            images += 1
            again.append_batch(data[:4])  # the same LSNs again, after a cut: new nonces
            again.truncate_after(again.last_lsn - 2)  # a rewrite: new nonces again
            again.close()
    return images


def test_no_key_and_nonce_pair_is_used_twice_across_crash_states() -> None:
    keys = CounterKeys()
    assert _nonce_run(keys) > 20
    assert len(set(keys.used)) == len(keys.used)
    # How prefixes are drawn is what the check looks at: a ring that keeps one prefix for
    # a key (no redraw on resume or rewrite) repeats (key, nonce) pairs at once.
    faulty = CounterKeys(keep_prefix=True)
    _nonce_run(faulty)
    assert len(set(faulty.used)) < len(faulty.used)


@pytest.mark.parametrize("option", ["preallocate", "direct_io"])
def test_no_key_and_nonce_pair_is_used_twice_in_a_preallocated_log(option: str) -> None:
    """preallocate=True: resumes over the zeros and trims at the seal draw nonces as
    above (the crash images include a size change not yet durable); direct_io=True
    rewrites the last block from its stored bytes, never encrypting a frame again."""
    keys = CounterKeys()
    assert _nonce_run(keys, preallocate=True, direct=option == "direct_io") > 20
    assert len(set(keys.used)) == len(keys.used)
