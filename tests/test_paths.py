"""Paths as a user hands them over: relative, bytes, path-like, wrong types (issue 13, #3-#4).

A relative path is resolved once, at open: a later ``os.chdir`` never moves where the log's
next segment goes. ``bytes`` and ``os.PathLike`` work as they do for ``os``; anything else
is a ``TypeError``, and an empty path or one with a NUL byte a ``ConfigError``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

import segwal


@pytest.fixture
def in_tmp(tmp_path: Path) -> Iterator[Path]:
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)


@pytest.mark.parametrize("sync", ["always", "interval", "never"])
def test_chdir_after_open_never_moves_the_log(in_tmp: Path, sync: str) -> None:
    elsewhere = in_tmp / "elsewhere"
    elsewhere.mkdir()
    acked = []
    with segwal.open("wal", segment_bytes=1024, sync=sync) as wal:  # type: ignore[arg-type]
        assert wal.path == str(in_tmp / "wal")
        acked.append(wal.append(b"before chdir " + bytes(100)))
        os.chdir(elsewhere)
        for i in range(40):  # several rotations after the chdir
            acked.append(wal.append(b"after chdir %d " % i + bytes(100)))
        wal.sync()
    assert not (elsewhere / "wal").exists()
    with segwal.open(in_tmp / "wal", readonly=True) as wal:
        assert [r.lsn for r in wal.replay()] == acked
    assert segwal.verify(in_tmp / "wal").ok


def test_a_relative_path_given_to_verify_is_resolved_too(in_tmp: Path) -> None:
    with segwal.open("log") as wal:
        wal.append(b"x")
    assert segwal.verify("log").ok
    assert segwal.verify(b"log").ok


@pytest.mark.parametrize(
    "make",
    [
        lambda p: os.fsencode(str(p)),
        lambda p: p,
        lambda p: PurePosixPath(str(p)),
        str,
        lambda p: str(p) + "/",
        lambda p: str(p) + "/./",
    ],
    ids=["bytes", "Path", "PurePosixPath", "str", "trailing slash", "dot"],
)
def test_every_path_form_opens_the_same_log(tmp_path: Path, make: object) -> None:
    target = tmp_path / "wal"
    with segwal.open(target) as wal:
        wal.append(b"first")
    with segwal.open(make(target)) as wal:  # type: ignore[operator]
        assert wal.path == str(target)
        assert wal.append(b"second") == 2
    assert sorted(os.listdir(tmp_path)) == ["wal"]  # nothing named b'...' anywhere
    assert not any("b'" in name for name in os.listdir(os.getcwd()))


def test_bytes_path_not_utf8_is_decoded_like_os(tmp_path: Path) -> None:
    raw = os.fsencode(str(tmp_path)) + b"/wal-\xff"
    with segwal.open(raw) as wal:
        wal.append(b"x")
    assert os.path.isdir(raw)


@pytest.mark.parametrize("bad", [None, 3, 2.5, ["wal"], object()])
def test_wrong_path_types_are_a_type_error(tmp_path: Path, bad: object) -> None:
    before = sorted(os.listdir(os.getcwd()))
    with pytest.raises(TypeError, match=r"path must be str, bytes or os\.PathLike"):
        segwal.open(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        segwal.verify(bad)  # type: ignore[arg-type]
    assert sorted(os.listdir(os.getcwd())) == before


@pytest.mark.parametrize("bad", ["", b"", "wal\0x", b"wal\0x"])
def test_empty_or_nul_paths_are_a_config_error(bad: str | bytes) -> None:
    with pytest.raises(segwal.ConfigError) as info:
        segwal.open(bad)
    assert info.value.option == "path"


def test_the_in_memory_file_system_keeps_paths_as_given() -> None:
    from segwal.testing import MemoryFileSystem

    fs = MemoryFileSystem()
    with segwal.open("rel/wal", filesystem=fs) as wal:
        assert wal.path == "rel/wal"
        wal.append(b"x")
    with segwal.open("/rel/wal", filesystem=fs, readonly=True) as wal:
        assert wal.last_lsn == 1
