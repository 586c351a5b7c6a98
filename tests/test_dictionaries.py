"""Trained compression dictionaries (issue 11): the dictionary file, the header's dictionary
id, reading and writing a log with one, what a missing or damaged one does, never deleting
one a segment names, verify, and the CLI.

Sizes below compare a log written with a dictionary against the same records written
without one in the same test; the speed of either is measured in ``segwal bench --codecs``.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import struct
import sys
from pathlib import Path
from types import ModuleType

import blake3
import pytest
from click.testing import CliRunner

import segwal
from dictlib import record, trained
from segwal.cli import main
from segwal.format import dictionary as zdict
from segwal.format.layout import FormatError, crc32c, decode_header, encode_header

LOG_ID = bytes(range(16))


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.name != "LOCK"}


def _dict_file(path: Path) -> Path:
    (found,) = path.glob("*.zdict")
    return found


def _write(path: Path, dictionary: bytes | None, n: int = 300, **kw: object) -> None:
    with segwal.open(
        path,
        compression="zstd",
        compression_dictionary=dictionary,
        sync="never",
        **kw,  # type: ignore[arg-type]
    ) as wal:
        for i in range(n):
            wal.append(record(i))


def _wal_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.wal"))


# -- the dictionary file -----------------------------------------------------------------------


def test_the_file_round_trips_and_is_named_by_its_digest() -> None:
    made = zdict.make(trained())
    data = zdict.encode(made)
    assert data[:8] == b"SWDICT01" and len(data) == 48 + len(made.content) + 4
    assert made.digest == blake3.blake3(made.content).digest()
    assert made.dict_id == struct.unpack("<I", made.digest[:4])[0] != 0
    assert made.name == made.digest.hex() + ".zdict"
    assert zdict.decode(data, "/log/" + made.name) == made


@pytest.mark.parametrize(
    ("offset", "reason"),
    [(60, "checksum"), (9, "checksum"), (-1, "checksum"), (12, "size")],
)
def test_a_damaged_file_is_corruption_naming_it(offset: int, reason: str) -> None:
    data = bytearray(zdict.encode(zdict.make(trained())))
    data[offset] ^= 0x40
    with pytest.raises(segwal.CorruptionError, match=reason) as info:
        zdict.decode(bytes(data), "/log/x.zdict")
    assert info.value.path == "/log/x.zdict"


def test_content_that_disagrees_with_its_digest_or_name_is_refused() -> None:
    made = zdict.make(trained())
    body = bytearray(zdict.encode(made)[:-4])
    body[100] ^= 1  # content changed, CRC recomputed: only the digest can tell
    forged = bytes(body) + struct.pack("<I", crc32c(bytes(body)))
    with pytest.raises(segwal.CorruptionError, match="digest"):
        zdict.decode(forged, "/log/d.zdict")
    other = zdict.make(trained(1))
    with pytest.raises(segwal.CorruptionError, match="file name"):
        zdict.decode(zdict.encode(made), "/log/" + other.name)


def test_a_newer_file_is_unsupported_not_corrupt() -> None:
    data = b"SWDICT02" + zdict.encode(zdict.make(trained()))[8:]
    with pytest.raises(segwal.UnsupportedFormatError):
        zdict.decode(data, "/log/d.zdict")


def test_only_trained_zstd_dictionaries_are_stored() -> None:
    with pytest.raises(ValueError, match="magic"):
        zdict.make(b"not a dictionary at all")
    with pytest.raises(ValueError):
        zdict.make(b"")


# -- the header ---------------------------------------------------------------------------------


def _header(compression: int, dict_id: int) -> bytes:
    return encode_header(
        log_id=LOG_ID,
        sequence=0,
        first_lsn=1,
        created_us=1,
        max_record_bytes=1 << 20,
        prev_digest=bytes(32),
        compression_id=compression,
        dict_id=dict_id,
    )


def test_the_header_names_the_dictionary_at_byte_116() -> None:
    raw = _header(1, 0xDEADBEEF)
    assert raw[116:120] == struct.pack("<I", 0xDEADBEEF)
    assert decode_header(raw).dict_id == 0xDEADBEEF
    assert _header(1, 0)[96:124] == bytes(28)  # no dictionary: the bytes of before


def test_a_dictionary_id_outside_a_zstd_segment_is_damage() -> None:
    raw = bytearray(_header(2, 0))  # lz4
    raw[116:120] = struct.pack("<I", 7)
    raw[124:128] = struct.pack("<I", crc32c(bytes(raw[:124])))
    with pytest.raises(FormatError) as info:
        decode_header(bytes(raw))
    assert not info.value.newer
    with pytest.raises(ValueError):
        _header(2, 7)


def _released_v1() -> ModuleType:
    path = Path(__file__).parent / "golden" / "layout_v1_released.py"
    spec = importlib.util.spec_from_file_location("layout_v1_released", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_released_reader_refuses_a_dictionary_segment_as_newer(tmp_path: Path) -> None:
    _write(tmp_path / "log", trained(), n=3)
    (segment,) = (tmp_path / "log").glob("*.wal")
    v1 = _released_v1()
    with pytest.raises(v1.FormatError, match="newer") as info:
        v1.decode_header(segment.read_bytes()[:128])
    assert info.value.newer


# -- writing and reading ------------------------------------------------------------------------


def test_single_small_records_compress_with_a_dictionary(tmp_path: Path) -> None:
    _write(tmp_path / "plain", None)
    _write(tmp_path / "dict", trained())
    plain, with_dict = _wal_bytes(tmp_path / "plain"), _wal_bytes(tmp_path / "dict")
    payload = sum(len(record(i)) for i in range(300))
    # Each record is one frame (40-byte head): the dictionary takes the body to about half.
    assert with_dict < plain - payload // 3, (with_dict, plain, payload)
    with segwal.open(tmp_path / "dict", readonly=True) as wal:
        assert [r.payload for r in wal.replay()] == [record(i) for i in range(300)]
        assert wal.read(137).payload == record(136)  # a frame decodes alone


def test_batches_and_rotations_with_a_dictionary_read_back(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with segwal.open(
        path, compression="zstd", compression_dictionary=trained(), segment_bytes=4096
    ) as wal:
        wal.append_batch([record(i) for i in range(50)])
        for i in range(50, 200):
            wal.append(record(i))
        assert len(wal.segments()) > 3
    with segwal.open(path) as wal:  # no dictionary option: the log's file is enough
        assert [r.payload for r in wal.replay()] == [record(i) for i in range(200)]
        wal.append(b"plain " * 30)  # the tail keeps its header; its frames go raw
    assert segwal.verify(path).ok


def test_the_dictionary_is_stored_once_and_given_as_a_file(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _write(path, trained(), n=5)
    stored = _dict_file(path)
    _write(path, trained(), n=5)  # the same one again: nothing new
    assert list(path.glob("*.zdict")) == [stored]
    given = tmp_path / "d.bin"
    given.write_bytes(trained())
    _write(path, str(given), n=5)  # a file of the content
    _write(path, stored, n=5)  # the .zdict file itself
    assert list(path.glob("*.zdict")) == [stored]


def test_a_new_dictionary_applies_to_new_segments(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _write(path, trained(0), n=20)
    with segwal.open(path, compression="zstd", compression_dictionary=trained(1)) as wal:
        wal.rotate()
        for i in range(20, 40):
            wal.append(record(i))
    infos = segwal.list_dictionaries(path)
    assert len(infos) == 2 and all(len(i.segments) == 1 for i in infos)
    with segwal.open(path, readonly=True) as wal:
        assert [r.payload for r in wal.replay()] == [record(i) for i in range(40)]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({}, 'compression="zstd"'),
        ({"compression": "lz4"}, 'compression="zstd"'),
        ({"compression": "zstd", "encryption_key": bytes(32)}, "encryption"),
        ({"compression": "zstd", "readonly": True}, "readonly"),
    ],
)
def test_options_that_cannot_go_with_a_dictionary(
    tmp_path: Path, options: dict[str, object], match: str
) -> None:
    with pytest.raises(segwal.ConfigError, match=match):
        segwal.open(tmp_path / "log", compression_dictionary=trained(), **options)  # type: ignore[arg-type]
    assert not (tmp_path / "log").exists()


def test_a_dictionary_that_is_no_dictionary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(segwal.ConfigError, match="magic"):
        segwal.open(tmp_path / "log", compression="zstd", compression_dictionary=b"x" * 64)
    with pytest.raises(segwal.ConfigError, match="No such file"):
        segwal.open(
            tmp_path / "log", compression="zstd", compression_dictionary=str(tmp_path / "none")
        )


def _colliding() -> tuple[bytes, bytes]:
    """Two dictionary contents whose ids (4 bytes of BLAKE3) are equal: a birthday search
    over ~2^16 candidates, deterministic."""
    seen: dict[bytes, bytes] = {}
    for n in itertools.count():
        content = zdict.ZSTD_DICT_MAGIC + n.to_bytes(8, "little")
        prefix = blake3.blake3(content).digest()[:4]
        if prefix in seen and prefix != bytes(4):
            return seen[prefix], content
        seen[prefix] = content
    raise AssertionError("unreachable")


def test_two_dictionaries_with_one_id_are_refused(tmp_path: Path) -> None:
    first, second = _colliding()
    path = tmp_path / "log"
    a, b = zdict.make(first), zdict.make(second)
    assert a.dict_id == b.dict_id and a.digest != b.digest
    path.mkdir()
    (path / a.name).write_bytes(zdict.encode(a))
    with pytest.raises(segwal.ConfigError, match="train another"):
        segwal.open(path, compression="zstd", compression_dictionary=second)
    # Two files under one id (copied in by hand): the id names neither, so verify says so.
    (path / b.name).write_bytes(zdict.encode(b))
    report = segwal.verify(path)
    assert not report.ok and "share id" in str(report.problems)


# -- missing and damaged dictionaries -----------------------------------------------------------


def test_a_missing_dictionary_is_a_typed_error_naming_the_segment(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _write(path, trained(), n=50, segment_bytes=2048)
    _dict_file(path).unlink()
    before = _files(path)
    with (
        segwal.open(path, readonly=True) as wal,
        pytest.raises(segwal.MissingDictionaryError) as info,
    ):
        list(wal.replay())
    assert info.value.path is not None and info.value.path.endswith(".wal")
    with segwal.open(path) as wal:  # recovery needs no dictionary: the CRCs cover the bytes
        assert wal.last_lsn == 50
        with pytest.raises(segwal.MissingDictionaryError):
            wal.read(3)
    after = _files(path)
    assert {k: v for k, v in after.items() if k != "META"} == {
        k: v for k, v in before.items() if k != "META"
    }
    report = segwal.verify(path)
    assert not report.ok and any("missing" in p.reason for p in report.problems)


def test_a_cut_inside_a_compressed_batch_checks_for_the_dictionary_first(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log"
    with segwal.open(path, compression="zstd", compression_dictionary=trained()) as wal:
        wal.append_batch([record(i) for i in range(20)])
    _dict_file(path).unlink()
    with segwal.open(path) as wal:
        before = _files(path)
        with pytest.raises(segwal.MissingDictionaryError):
            wal.truncate_after(10)  # re-encoding the straddling batch needs the dictionary
        assert _files(path) == before
        assert wal.last_lsn == 20


def test_a_damaged_dictionary_is_corruption_naming_its_file(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _write(path, trained(), n=20)
    stored = _dict_file(path)
    data = bytearray(stored.read_bytes())
    data[200] ^= 0xFF
    stored.write_bytes(bytes(data))
    with segwal.open(path, readonly=True) as wal, pytest.raises(segwal.CorruptionError) as info:
        list(wal.replay())
    assert info.value.path == str(stored)
    report = segwal.verify(path)
    assert not report.ok and any(p.path == str(stored) for p in report.problems)


# -- never deleted while referenced -------------------------------------------------------------


def test_retention_and_truncation_never_delete_a_dictionary(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with segwal.open(
        path,
        compression="zstd",
        compression_dictionary=trained(),
        segment_bytes=2048,
        retention_max_bytes=4096,
    ) as wal:
        for i in range(200):
            wal.append(record(i))
        wal.apply_retention()
        wal.truncate_before(wal.last_lsn - 5)
        wal.truncate_after(wal.last_lsn - 2)
    stored = _dict_file(path)
    assert segwal.prune_dictionaries(path, dry_run=True) == ()
    assert segwal.prune_dictionaries(path) == ()
    assert stored.exists()
    with segwal.open(path, readonly=True) as wal:
        assert [r.payload for r in wal.replay()][-1] == record(197)


def test_prune_deletes_only_dictionaries_no_segment_names(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _write(path, trained(0), n=30, segment_bytes=2048)
    with segwal.open(path, compression="zstd", compression_dictionary=trained(1)) as wal:
        pass  # stored, but the resumed tail names the first: no segment names this one
    second = path / zdict.make(trained(1)).name
    first = path / zdict.make(trained(0)).name
    with segwal.open(path) as wal, pytest.raises(segwal.LockError):
        segwal.prune_dictionaries(path)  # never under a writer
    assert segwal.prune_dictionaries(path, keep=[trained(1)]) == ()
    assert segwal.prune_dictionaries(path, dry_run=True) == (str(second),)
    assert second.exists()
    assert segwal.prune_dictionaries(path) == (str(second),)
    assert not second.exists() and first.exists()
    # Once the segments that name the first are gone, it may go too.
    with segwal.open(path, compression="zstd") as wal:
        wal.rotate()
        wal.append(b"x" * 300)
        wal.truncate_before(wal.last_lsn)
    assert segwal.prune_dictionaries(path) == (str(first),)
    with segwal.open(path, readonly=True) as wal:
        assert [r.payload for r in wal.replay()] == [b"x" * 300]
    assert segwal.verify(path).ok


def test_a_quarantined_piece_keeps_its_dictionary(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _write(path, trained(), n=10)
    (segment,) = path.glob("*.wal")
    os.rename(segment, str(segment) + ".1.quarantine")
    assert segwal.prune_dictionaries(path) == ()


# -- the command line ---------------------------------------------------------------------------


def test_the_cli_trains_lists_and_prunes(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with segwal.open(path) as wal:
        for i in range(800):
            wal.append(record(i))
    out = tmp_path / "d.zdict"
    runner = CliRunner()
    trained_now = runner.invoke(
        main, ["dict", "train", str(path), "--samples", "500", "--size", "4096", "--out", str(out)]
    )
    assert trained_now.exit_code == 0, trained_now.output
    assert out.read_bytes()[:4] == zdict.ZSTD_DICT_MAGIC and len(out.read_bytes()) <= 4096
    with segwal.open(path, compression="zstd", compression_dictionary=str(out)) as wal:
        wal.rotate()
        wal.append(record(900))
    listed = runner.invoke(main, ["dict", "list", str(path), "--json"])
    assert listed.exit_code == 0 and '"segments": ["' in listed.output
    refused = runner.invoke(main, ["dict", "prune", str(path)])
    assert refused.exit_code == 0 and "no dictionary to delete" in refused.output
    samples = tmp_path / "samples.txt"
    samples.write_bytes(b"\n".join(record(i, 3) for i in range(500)))
    from_file = runner.invoke(
        main, ["dict", "train", "--samples-file", str(samples), "--out", str(tmp_path / "e")]
    )
    assert from_file.exit_code == 0, from_file.output
    both = runner.invoke(main, ["dict", "train", "--out", str(tmp_path / "f")])
    assert both.exit_code == 2


# -- golden files (tests/golden/make_golden.py) -------------------------------------------------

GOLDEN = Path(__file__).parent / "golden"


def test_golden_dictionary_header_and_frame_by_hand() -> None:
    from segwal.format.codecs import decoding_dictionary
    from segwal.format.frames import plain_body
    from segwal.format.scanner import Status, check

    data = (GOLDEN / "dictionary_v2.zdict").read_bytes()
    magic, codec, reserved, size, digest = struct.unpack_from("<8sB3sI32s", data)
    assert (magic, codec, reserved, size) == (b"SWDICT01", 1, bytes(3), len(data) - 52)
    content = data[48:-4]
    assert content[:4] == bytes.fromhex("37a430ec") and blake3.blake3(content).digest() == digest
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == crc32c(data[:-4])
    head_raw = (GOLDEN / "header_dict_v2.bin").read_bytes()
    assert head_raw[8:14] == bytes([2, 0, 1, 0, 0x01, 1])  # version 2, COMPRESSED, CRC, zstd
    assert head_raw[116:120] == digest[:4]  # the id: the digest's first four bytes
    head = decode_header(head_raw)
    frame = (GOLDEN / "frame_dict_v2.bin").read_bytes()
    verdict = check(frame, 0, len(frame), head.seed, 1 << 24, head.flags)
    assert verdict.status is Status.FRAME and verdict.frame is not None
    assert frame[5] == 0x03  # COMMIT | COMPRESSED
    with pytest.raises(FormatError):  # without its dictionary the frame does not decode
        plain_body(frame, verdict.frame, head, None)
    body, start, end = plain_body(
        frame, verdict.frame, head, None, dictionary=decoding_dictionary(content)
    )
    payload = b'{"id": 4242, "user": "user-29694", "event": "click"}'
    assert bytes(body[start:end]) == struct.pack("<I", len(payload)) + payload
