"""The command line on encrypted logs: 'segwal keys' (list, rotate, delete) and --kek-file
(or SEGWAL_KEK_FILE) on the commands that read payloads or open the log as its writer."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

import segwal
from segwal.cli import main

KEK = bytes(range(32))
OTHER_KEK = bytes(range(1, 33))


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def _files(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


@pytest.fixture
def encrypted(tmp_path: Path) -> Path:
    path = tmp_path / "log"
    with segwal.open(path, encryption_key=KEK, segment_bytes=4096) as wal:
        for i in range(100):
            wal.append(b"record %d" % i + bytes(40))
    return path


@pytest.fixture
def kek(tmp_path: Path) -> Path:
    path = tmp_path / "kek"
    path.write_bytes(KEK.hex().encode() + b"\n")
    return path


def test_the_keys_command(encrypted: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from segwal.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(main, list(args))
        return result.exit_code, result.stdout, result.stderr

    kek, new = tmp_path / "kek", tmp_path / "new"
    kek.write_bytes(KEK.hex().encode() + b"\n")
    new.write_bytes(OTHER_KEK)
    code, out, _ = run("keys", "list", str(encrypted), "--json")
    assert code == 0
    assert '"keys": [{"key_id": 1, "cipher": "aes-256-gcm"' in out
    before = _files(encrypted)
    code, _, err = run("keys", "rotate", str(encrypted), "--kek-file", str(kek), "--new-log-key")
    assert code == 2 and "--yes" in err
    code, _, err = run(
        "keys", "rotate", str(encrypted), "--kek-file", str(new), "--new-log-key", "--yes"
    )
    assert code == 2 and "wrong key" in err
    assert _files(encrypted) == before
    code, out, _ = run(
        "keys", "rotate", str(encrypted), "--kek-file", str(kek),
        "--new-kek-file", str(new), "--new-log-key", "--yes",
    )  # fmt: skip
    assert code == 0, out
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["1", "2"]
    code, _, err = run("keys", "delete", str(encrypted), "--key-id", "2", "--yes")
    assert code == 2 and "current key" in err
    with segwal.open(encrypted, encryption=segwal.KeyFile(new), segment_bytes=4096) as wal:
        assert wal.last_lsn == 100
        for _ in range(100):
            wal.append(bytes(48))
    code, out, _ = run("keys", "delete", str(encrypted), "--key-id", "1", "--yes", "--json")
    assert code == 0 and '"key_id": 2' in out and '"key_id": 1' not in out
    plain = tmp_path / "plain"
    with segwal.open(plain) as wal:
        wal.append(b"x")
    code, _, err = run("keys", "list", str(plain))
    assert code == 2 and "not encrypted" in err


def test_reading_and_changing_an_encrypted_log_takes_kek_file(encrypted: Path, kek: Path) -> None:
    code, _, err = run("dump", str(encrypted), "--from", "1", "--to", "1")
    assert code == 2 and "--kek-file" in err
    code, out, _ = run("dump", str(encrypted), "--from", "1", "--to", "1", "--kek-file", str(kek))
    assert code == 0 and "record 0" in out
    code, out, _ = run("tail", str(encrypted), "-n", "1", "--kek-file", str(kek))
    assert code == 0 and "record 99" in out
    before = _files(encrypted)
    code, _, err = run("truncate", str(encrypted), "--after", "50", "--yes")
    assert code == 2 and "encrypted" in err
    assert _files(encrypted) == before
    code, _, _ = run(
        "truncate", str(encrypted), "--after", "50", "--yes", env={"SEGWAL_KEK_FILE": str(kek)}
    )
    assert code == 0
    code, _, _ = run("holds", str(encrypted), "--set", "h", "10", "--kek-file", str(kek))
    assert code == 0
    with segwal.open(encrypted, encryption_key=KEK) as wal:
        assert wal.last_lsn == 50 and wal.holds() == {"h": 10}


def test_info_says_whether_a_log_is_encrypted(encrypted: Path, tmp_path: Path) -> None:
    code, out, _ = run("info", str(encrypted))
    assert code == 0 and "encryption    aes-256-gcm, log key 1 current, 1 held" in out
    code, out, _ = run("info", str(encrypted), "--json")
    assert '"encryption": {"current_key_id": 1, "cipher": "aes-256-gcm", "key_ids": [1]}' in out
    plain = tmp_path / "plain"
    with segwal.open(plain) as wal:
        wal.append(b"x")
    code, out, _ = run("info", str(plain), "--json")
    assert code == 0 and '"encryption": null' in out
    assert "encryption" not in run("info", str(plain))[1]


def test_verify_authenticates_frames_with_the_key(encrypted: Path, kek: Path) -> None:
    from segwal.format.layout import FRAME_HEAD, crc32c, decode_header

    assert run("verify", str(encrypted))[0] == 0  # checksums, seals, chain: no key needed
    assert run("verify", str(encrypted), "--kek-file", str(kek))[0] == 0
    # A ciphertext byte flipped and the frame's CRC made valid again, in the active segment
    # (no seal digest covers it yet): only the key sees it.
    first = sorted(encrypted.glob("*.wal"))[-1]
    raw = bytearray(first.read_bytes())
    seed = decode_header(bytes(raw[:128])).seed
    length = FRAME_HEAD.unpack_from(raw, 128)[5] + 40
    raw[128 + length - 20] ^= 0x40
    struct.pack_into("<I", raw, 128, crc32c(bytes(raw[132 : 128 + length]), seed))
    first.write_bytes(bytes(raw))
    assert run("verify", str(encrypted))[0] == 0
    code, out, _ = run("verify", str(encrypted), "--kek-file", str(kek), "--json")
    assert code == 1 and "authenticate" in out
    other = encrypted.parent / "other-kek"
    other.write_bytes(OTHER_KEK)
    code, _, err = run("verify", str(encrypted), "--kek-file", str(other))
    assert code == 2 and "wrong key" in err


def test_migrate_encrypts_decrypts_and_reencrypts(tmp_path: Path, kek: Path) -> None:
    plain = tmp_path / "plain"
    with segwal.open(plain, segment_bytes=4096) as wal:
        for i in range(50):
            wal.append(b"secret %d" % i)
    sealed, back, other = tmp_path / "sealed", tmp_path / "back", tmp_path / "other"
    code, _, err = run("migrate", str(plain), str(sealed), "--encrypt-kek-file", str(kek))
    assert code == 0, err
    assert all(b"secret" not in p.read_bytes() for p in sealed.glob("*.wal"))
    with segwal.open(sealed, readonly=True, encryption_key=KEK) as wal:
        assert [r.payload for r in wal.replay()] == [b"secret %d" % i for i in range(50)]
    code, _, err = run("migrate", str(sealed), str(back))
    assert code == 2 and "--kek-file" in err and not back.exists()
    assert run("migrate", str(sealed), str(back), "--kek-file", str(kek))[0] == 0
    assert not (back / "KEYS").exists()
    new_kek = tmp_path / "new-kek"
    new_kek.write_bytes(OTHER_KEK)
    code, _, err = run(
        "migrate", str(sealed), str(other), "--kek-file", str(kek), "--encrypt-kek-file",
        str(new_kek),
    )  # fmt: skip
    assert code == 0, err
    with segwal.open(other, readonly=True, encryption_key=OTHER_KEK) as wal:
        assert wal.read(50).payload == b"secret 49"
    dump = tmp_path / "dump.ndjson"
    dump.write_text(run("dump", str(back), "--json")[1])
    imported = tmp_path / "imported"
    code, _, err = run(
        "import", str(imported), "--ndjson", str(dump), "--encrypt-kek-file", str(kek)
    )
    assert code == 0, err
    with segwal.open(imported, readonly=True, encryption_key=KEK) as wal:
        assert wal.read(1).payload == b"secret 0"
