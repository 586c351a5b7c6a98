"""Keys of encrypted logs: wrapping, the KEYS file, the key ring and its nonces, providers,
and what opening a log with (or without, or with the wrong) key does.

- a log key wrapped under a KEK unwraps under it only, bound to its log and key id;
- KEYS decodes to what was encoded; truncated, garbage, foreign or newer KEYS files give
  typed errors (read three ways: whole, cut at every length, with trailing junk);
- a wrong KEK raises WrongKeyError and leaves every file, LOCK included, byte-identical; so
  does a missing key, a damaged KEYS or a KEYS of another log;
- nonces: a fresh prefix per writing key, redrawn before the counter wraps, refused in a
  forked child (a real fork).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import segwal
from segwal.errors import ContinuityError, CorruptionError, UnsupportedFormatError
from segwal.format import keys as keyfile
from segwal.format.keyring import (
    AES_256_GCM,
    CHACHA20_POLY1305,
    KeyRing,
    LogKey,
    NonceSource,
    derive_segment_key,
    unwrap_log_key,
    wrap_log_key,
)
from segwal.format.layout import crc32c

KEK = bytes(range(32))
OTHER_KEK = bytes(range(1, 33))
LOG_ID = bytes.fromhex("00112233445566778899aabbccddeeff")


def _stored(n: int = 2, kek: bytes = KEK) -> keyfile.KeysFile:
    keys = [
        LogKey(key_id=i, cipher_id=AES_256_GCM, key=bytes([i]) * 32, created_us=1000 * i)
        for i in range(1, n + 1)
    ]
    return keyfile.seal(kek, LOG_ID, keys, n, os.urandom)


def _files(path: Path) -> dict[str, str]:
    """Every file of the log, LOCK included, by content hash."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def _recrc(data: bytes) -> bytes:
    return data[:-4] + struct.pack("<I", crc32c(data[:-4]))


# -- wrapping --------------------------------------------------------------------------


def test_a_wrapped_key_unwraps_under_its_kek_log_and_id_only() -> None:
    nonce = os.urandom(12)
    key = os.urandom(32)
    wrapped = wrap_log_key(KEK, LOG_ID, 7, key, nonce)
    assert len(wrapped) == 48 and key not in wrapped
    assert unwrap_log_key(KEK, LOG_ID, 7, nonce, wrapped) == key
    assert unwrap_log_key(OTHER_KEK, LOG_ID, 7, nonce, wrapped) is None
    assert unwrap_log_key(KEK, LOG_ID, 8, nonce, wrapped) is None  # moved to another id
    assert unwrap_log_key(KEK, bytes(16), 7, nonce, wrapped) is None  # moved to another log


def test_segment_keys_differ_by_salt_segment_and_key() -> None:
    base = dict(log_id=LOG_ID, cipher_id=AES_256_GCM, key_id=1, sequence=3, first_lsn=100)
    key, salt = bytes(32), bytes(16)
    one = derive_segment_key(key, salt, **base)  # type: ignore[arg-type]
    assert one == derive_segment_key(key, salt, **base)  # type: ignore[arg-type]
    variants = [
        derive_segment_key(key, b"\1" * 16, **base),  # type: ignore[arg-type]
        derive_segment_key(b"\1" * 32, salt, **base),  # type: ignore[arg-type]
        derive_segment_key(key, salt, **{**base, "sequence": 4}),  # type: ignore[arg-type]
        derive_segment_key(key, salt, **{**base, "first_lsn": 101}),  # type: ignore[arg-type]
        derive_segment_key(key, salt, **{**base, "cipher_id": 2}),  # type: ignore[arg-type]
    ]
    assert len({one, *variants}) == 6


# -- the KEYS file: three ways, and damage -----------------------------------------------


def test_keys_round_trip_and_its_size() -> None:
    stored = _stored(3)
    data = keyfile.encode(stored)
    assert len(data) == 32 + 3 * 76 + 4
    assert data[:8] == b"SWKEYS01" and data[8:24] == LOG_ID
    assert keyfile.decode(data, "KEYS") == stored
    assert stored.cipher_id == AES_256_GCM
    assert [k.key for k in keyfile.unseal(KEK, stored, "KEYS")] == [
        b"\1" * 32,
        b"\2" * 32,
        b"\3" * 32,
    ]


def test_a_truncated_keys_file_is_corruption_at_every_length() -> None:
    data = keyfile.encode(_stored(2))
    for n in range(len(data)):
        with pytest.raises(CorruptionError):
            keyfile.decode(data[:n], "KEYS")


def test_trailing_junk_is_corruption() -> None:
    data = keyfile.encode(_stored(1))
    for junk in (b"\0", b"x" * 76, keyfile.encode(_stored(1))):
        with pytest.raises(CorruptionError):
            keyfile.decode(data + junk, "KEYS")


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_flipped_byte_is_corruption(data: st.DataObject) -> None:
    raw = bytearray(keyfile.encode(_stored(2)))
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] ^= data.draw(st.integers(1, 255))
    with pytest.raises((CorruptionError, UnsupportedFormatError)):
        keyfile.decode(bytes(raw), "KEYS")


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=400))
def test_garbage_is_a_typed_error(raw: bytes) -> None:
    with pytest.raises((CorruptionError, UnsupportedFormatError)):
        keyfile.decode(raw, "KEYS")


def _edit(data: bytes, offset: int, value: bytes) -> bytes:
    return _recrc(data[:offset] + value + data[offset + len(value) :])


@pytest.mark.parametrize(
    ("offset", "value", "error", "words"),
    [
        (0, b"SWKEYS02", UnsupportedFormatError, "newer segwal"),
        (0, b"SWMETA01", CorruptionError, "bad magic"),
        (24, struct.pack("<I", 9), CorruptionError, "current key 9"),  # not among the keys
        (28, struct.pack("<I", 3), CorruptionError, "disagree"),  # count vs size
        (28, struct.pack("<I", 0), CorruptionError, "disagree"),
        (32 + 76, struct.pack("<I", 1), CorruptionError, "not above"),  # ids must increase
        (32, struct.pack("<I", 0), CorruptionError, "not above"),  # key id 0 names nothing
        (32 + 4, b"\x09", UnsupportedFormatError, "cipher id 9"),
        (32 + 5, b"\x01", CorruptionError, "reserved"),
    ],
)
def test_checksum_valid_nonsense_is_refused(
    offset: int, value: bytes, error: type[Exception], words: str
) -> None:
    """A valid CRC over fields no writer of this format writes (a hand edit, a bug)."""
    data = _edit(keyfile.encode(_stored(2)), offset, value)
    with pytest.raises(error, match=words):
        keyfile.decode(data, "KEYS")


def test_one_key_wrapped_by_something_else_is_corruption_not_a_wrong_key() -> None:
    stored = _stored(2)
    bad = keyfile.seal(OTHER_KEK, LOG_ID, keyfile.unseal(KEK, stored, "K"), 2, os.urandom)
    mixed = keyfile.KeysFile(log_id=LOG_ID, current=2, entries=(stored.entries[0], bad.entries[1]))
    with pytest.raises(CorruptionError, match="does not unwrap"):
        keyfile.unseal(KEK, mixed, "KEYS")
    with pytest.raises(segwal.WrongKeyError) as caught:
        keyfile.unseal(OTHER_KEK, stored, "KEYS")
    assert caught.value.key_id == 1 and caught.value.path == "KEYS"


# -- the ring and its nonces -----------------------------------------------------------------


def _ring(**kw: object) -> KeyRing:
    keys = [
        LogKey(key_id=1, cipher_id=AES_256_GCM, key=bytes(32), created_us=0),
        LogKey(key_id=2, cipher_id=CHACHA20_POLY1305, key=b"\2" * 32, created_us=0),
    ]
    return KeyRing(LOG_ID, keys, 2, **kw)  # type: ignore[arg-type]


def test_the_ring_encrypts_new_segments_with_the_current_key_and_reads_old_ones() -> None:
    ring = _ring()
    assert ring.cipher_id == CHACHA20_POLY1305
    new = ring.for_new_segment(LOG_ID, 5, 100)
    assert (new.cipher_id, new.key_id, len(new.salt)) == (CHACHA20_POLY1305, 2, 16)
    nonce = new.next_nonce()
    sealed = new.aead.encrypt(nonce, b"payload", b"head")
    again = ring.for_segment(LOG_ID, 5, 100, 2, new.salt, writing=False)
    assert again.aead.decrypt(nonce, sealed, b"head") == b"payload"
    with pytest.raises(RuntimeError):
        again.next_nonce()  # a reading key never encrypts
    old = ring.for_segment(LOG_ID, 1, 10, 1, bytes(16), writing=False)
    assert old.cipher_id == AES_256_GCM
    other = ring.for_segment(LOG_ID, 5, 101, 2, new.salt, writing=False)  # another first LSN
    from cryptography.exceptions import InvalidTag

    with pytest.raises(InvalidTag):
        other.aead.decrypt(nonce, sealed, b"head")
    assert ring.for_new_segment(LOG_ID, 5, 100).salt != new.salt


def test_a_missing_key_or_another_log_is_a_typed_error() -> None:
    ring = _ring()
    with pytest.raises(segwal.MissingKeyError) as caught:
        ring.for_segment(LOG_ID, 0, 1, 7, bytes(16), writing=False)
    assert caught.value.key_id == 7
    with pytest.raises(ContinuityError):
        ring.for_new_segment(bytes(16), 0, 1)


def test_every_writing_key_draws_a_fresh_prefix() -> None:
    draws: list[bytes] = []

    def random(n: int) -> bytes:
        out = os.urandom(n)
        draws.append(out)
        return out

    ring = _ring(random=random)
    new = ring.for_new_segment(LOG_ID, 0, 1)
    resumed = ring.for_segment(LOG_ID, 0, 1, 2, new.salt, writing=True)
    rewritten = ring.for_segment(LOG_ID, 0, 1, 2, new.salt, writing=True)
    prefixes = [k.next_nonce()[:8] for k in (new, resumed, rewritten)]
    assert len(set(prefixes)) == 3
    assert all(p in draws for p in prefixes)  # each drawn from the random source


def test_the_prefix_is_redrawn_before_the_counter_wraps() -> None:
    source = NonceSource(limit=3)
    nonces = [source() for _ in range(7)]
    assert len(set(nonces)) == 7
    assert [n[8:] for n in nonces] == [struct.pack(">I", i) for i in (0, 1, 2, 0, 1, 2, 0)]
    assert len(source.prefixes) == 3 and len(set(source.prefixes)) == 3
    assert [n[:8] for n in nonces] == [source.prefixes[i // 3] for i in range(7)]


def test_a_forked_child_cannot_draw_nonces() -> None:
    source = NonceSource()
    source()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            try:
                source()
            except segwal.ForkedError as exc:
                code = 0 if exc.parent_pid == os.getppid() else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"\0"
    assert len(source()) == 12  # the parent goes on


# -- providers and options -------------------------------------------------------------------


def test_key_providers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = os.urandom(32)
    for name, text in (
        ("raw", key),
        ("hex", key.hex().encode() + b"\n"),
        ("b64", base64.b64encode(key) + b"\n"),
    ):
        (tmp_path / name).write_bytes(text)
        assert segwal.KeyFile(tmp_path / name).kek() == key
    (tmp_path / "short").write_bytes(b"abc")
    with pytest.raises(segwal.ConfigError):
        segwal.KeyFile(tmp_path / "short").kek()
    with pytest.raises(segwal.MissingKeyError):
        segwal.KeyFile(tmp_path / "absent").kek()
    monkeypatch.setenv("SEGWAL_TEST_KEK", key.hex())
    assert segwal.EnvKey("SEGWAL_TEST_KEK").kek() == key
    with pytest.raises(segwal.MissingKeyError):
        segwal.EnvKey("SEGWAL_TEST_UNSET_KEK").kek()
    assert segwal.KeyCallback(lambda: key).kek() == key
    with pytest.raises(segwal.ConfigError):
        segwal.KeyCallback(lambda: b"short").kek()
    assert key.hex() not in repr(segwal.RawKey(key)) and str(key) not in repr(segwal.RawKey(key))


@pytest.mark.parametrize(
    "options",
    [
        {"encryption_key": b"x" * 31},
        {"encryption_key": os.urandom(32), "encryption": os.urandom(32)},
        {"encryption": "not a key"},
        {"encryption": {"kek": os.urandom(32)}},
    ],
    ids=["short", "both", "text", "dict"],
)
def test_bad_encryption_options_are_refused(tmp_path: Path, options: dict[str, object]) -> None:
    with pytest.raises(segwal.ConfigError):
        segwal.open(tmp_path / "log", **options)  # type: ignore[arg-type]
    assert not (tmp_path / "log").exists()
    with pytest.raises(segwal.ConfigError, match="cipher"):
        segwal.Encryption(kek=segwal.RawKey(os.urandom(32)), cipher="rot13")
    with pytest.raises(segwal.ConfigError, match="key provider"):
        segwal.Encryption(kek="hunter2")  # type: ignore[arg-type]


# -- opening ---------------------------------------------------------------------------------


@pytest.fixture
def encrypted(tmp_path: Path) -> Path:
    path = tmp_path / "log"
    with segwal.open(path, encryption_key=KEK, segment_bytes=4096) as wal:
        for i in range(100):
            wal.append(b"record %d" % i + bytes(40))
    return path


def test_a_new_log_gets_keys_bound_to_its_segments(encrypted: Path) -> None:
    stored = keyfile.decode((encrypted / "KEYS").read_bytes(), "KEYS")
    first = (encrypted / "00000000000000000001.wal").read_bytes()
    assert stored.log_id == first[16:32]
    assert [k.current for k in segwal.list_keys(encrypted)] == [True]
    with segwal.open(encrypted, encryption_key=KEK) as wal:
        assert wal.last_lsn == 100


def test_a_wrong_kek_changes_no_file(encrypted: Path) -> None:
    # A killed writer's tail: recovery would have something to do, had it run.
    with (encrypted / sorted(p.name for p in encrypted.glob("*.wal"))[-1]).open("ab") as f:
        f.write(b"\x01" * 30)
    before = _files(encrypted)
    for readonly in (False, True):
        with pytest.raises(segwal.WrongKeyError) as caught:
            segwal.open(encrypted, encryption_key=OTHER_KEK, readonly=readonly)
        assert caught.value.path.endswith("KEYS")
    assert _files(encrypted) == before


def test_a_missing_key_changes_no_file(encrypted: Path) -> None:
    before = _files(encrypted)
    with pytest.raises(segwal.MissingKeyError):
        segwal.open(encrypted)
    with segwal.open(encrypted, readonly=True) as wal:  # needs the key for payloads only
        assert wal.last_lsn == 100
    assert _files(encrypted) == before


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "newer", "cipher"])
def test_a_damaged_keys_file_is_a_typed_error_and_changes_no_file(
    encrypted: Path, damage: str
) -> None:
    keys = encrypted / "KEYS"
    data = keys.read_bytes()
    edits = {
        "truncated": data[:50],
        "garbage": os.urandom(len(data)),
        "empty": b"",
        "newer": b"SWKEYS09" + data[8:],
        "cipher": _edit(data, 36, b"\x07"),
    }
    keys.write_bytes(edits[damage])
    before = _files(encrypted)
    error = UnsupportedFormatError if damage in ("newer", "cipher") else CorruptionError
    for options in ({"encryption_key": KEK}, {"readonly": True}, {}):
        with pytest.raises(error):
            segwal.open(encrypted, **options)
    assert _files(encrypted) == before


def test_keys_of_another_log_are_refused(encrypted: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    with segwal.open(other, encryption_key=KEK) as wal:
        wal.append(b"x")
    shutil.copy(other / "KEYS", encrypted / "KEYS")
    before = _files(encrypted)
    with pytest.raises(ContinuityError, match="belongs to log"):
        segwal.open(encrypted, encryption_key=KEK)
    assert _files(encrypted) == before


def test_a_plaintext_log_opened_with_a_key_gets_keys_for_its_new_segments(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with segwal.open(path) as wal:
        wal.append(b"plain")
    assert not (path / "KEYS").exists()
    with segwal.open(path, encryption_key=KEK) as wal:
        wal.append(b"later")
    stored = keyfile.decode((path / "KEYS").read_bytes(), "KEYS")
    assert stored.log_id == (path / "00000000000000000001.wal").read_bytes()[16:32]
    with pytest.raises(segwal.MissingKeyError):
        segwal.open(path)  # from now on the log is encrypted: the writer needs the key


# -- rotation --------------------------------------------------------------------------------


def test_rewrapping_under_a_new_kek_touches_no_segment(encrypted: Path) -> None:
    segments = {n: h for n, h in _files(encrypted).items() if n.endswith(".wal")}
    infos = segwal.rotate_keys(encrypted, KEK, new_kek=OTHER_KEK)
    assert [(k.key_id, k.current) for k in infos] == [(1, True)]
    assert {n: h for n, h in _files(encrypted).items() if n.endswith(".wal")} == segments
    with pytest.raises(segwal.WrongKeyError):
        segwal.open(encrypted, encryption_key=KEK)
    with segwal.open(encrypted, encryption_key=OTHER_KEK) as wal:
        assert wal.last_lsn == 100
    with pytest.raises(segwal.WrongKeyError):
        segwal.rotate_keys(encrypted, KEK, new_log_key=True)


def test_a_new_log_key_and_deleting_old_ones(encrypted: Path) -> None:
    infos = segwal.rotate_keys(encrypted, KEK, new_log_key=True, cipher="chacha20-poly1305")
    assert [(k.key_id, k.cipher, k.current) for k in infos] == [
        (1, "aes-256-gcm", False),
        (2, "chacha20-poly1305", True),
    ]
    with pytest.raises(segwal.ConfigError, match="current key"):
        segwal.delete_keys(encrypted, [2])
    with pytest.raises(segwal.MissingKeyError):
        segwal.delete_keys(encrypted, [9])
    # The active segment was begun under key 1, and the next writer appends to it.
    with pytest.raises(segwal.ConfigError, match="active segment"):
        segwal.delete_keys(encrypted, [1])
    with segwal.open(encrypted, encryption_key=KEK, segment_bytes=4096) as wal:
        for i in range(100):
            wal.append(b"after %d" % i + bytes(40))  # the active segment fills and rotates
        assert [r.payload for r in wal.replay(from_lsn=1)][:1] == [b"record 0" + bytes(40)]
    keys_of = {p.name: p.read_bytes()[96] for p in encrypted.glob("*.wal")}
    assert set(keys_of.values()) == {1, 2}
    assert [k.key_id for k in segwal.delete_keys(encrypted, [1])] == [2]
    assert [k.key_id for k in segwal.list_keys(encrypted)] == [2]
    with segwal.open(encrypted, encryption_key=KEK, segment_bytes=4096) as wal:
        # Shredded: what key 1 encrypted is unreadable for good; the rest reads.
        with pytest.raises(segwal.MissingKeyError) as caught:
            wal.read(1)
        assert caught.value.key_id == 1
        assert wal.read(200).payload == b"after 99" + bytes(40)
        wal.append(b"still writable")


def test_rotation_needs_a_closed_encrypted_log(encrypted: Path, tmp_path: Path) -> None:
    with segwal.open(encrypted, encryption_key=KEK):
        before = (encrypted / "KEYS").read_bytes()
        with pytest.raises(segwal.LockError):
            segwal.rotate_keys(encrypted, KEK, new_log_key=True)
        assert (encrypted / "KEYS").read_bytes() == before
    plain = tmp_path / "plain"
    with segwal.open(plain) as wal:
        wal.append(b"x")
    with pytest.raises(segwal.MissingKeyError, match="not encrypted"):
        segwal.rotate_keys(plain, KEK, new_log_key=True)
    with pytest.raises(segwal.ConfigError):
        segwal.rotate_keys(encrypted, KEK)


# -- verify and the command line -----------------------------------------------------------


def test_verify_checks_keys(encrypted: Path, tmp_path: Path) -> None:
    assert segwal.verify(encrypted).ok
    good = (encrypted / "KEYS").read_bytes()
    (encrypted / "KEYS").write_bytes(good[:-1])
    report = segwal.verify(encrypted)
    assert not report.ok
    assert [p.path for p in report.problems] == [str(encrypted / "KEYS")]
    other = tmp_path / "other"
    with segwal.open(other, encryption_key=KEK) as wal:
        wal.append(b"x")
    shutil.copy(other / "KEYS", encrypted / "KEYS")
    report = segwal.verify(encrypted)
    assert not report.ok and "belongs to log" in report.problems[0].reason
    (encrypted / "KEYS").write_bytes(b"SWKEYS07" + good[8:])
    report = segwal.verify(encrypted)
    assert not report.ok and report.problems[0].kind == "unsupported"


def test_keys_as_format_md_specifies_it() -> None:
    """An independent reader of FORMAT.md's "KEYS file" (struct and AESGCM only) opens what
    segwal writes, and the segment key is the documented HKDF."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    data = keyfile.encode(_stored(2))
    magic, log_id, current, count = struct.unpack_from("<8s16sII", data)
    assert (magic, log_id, current, count) == (b"SWKEYS01", LOG_ID, 2, 2)
    assert len(data) == 32 + 76 * count + 4
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == crc32c(data[:-4])
    keys = {}
    for i in range(count):
        key_id, cipher, reserved, created, nonce, wrapped = struct.unpack_from(
            "<IB3sQ12s48s", data, 32 + 76 * i
        )
        assert (cipher, reserved, created) == (1, bytes(3), 1000 * key_id)
        ad = log_id + struct.pack("<I", key_id)
        keys[key_id] = AESGCM(KEK).decrypt(nonce, wrapped, ad)
    assert keys == {1: b"\1" * 32, 2: b"\2" * 32}
    salt = bytes(range(16))
    info = b"segwal v2 segment key" + LOG_ID + struct.pack("<BIQQ", 1, 2, 5, 100)
    expected = HKDF(hashes.SHA256(), 32, salt, info).derive(keys[2])
    assert expected == derive_segment_key(
        keys[2], salt, log_id=LOG_ID, cipher_id=1, key_id=2, sequence=5, first_lsn=100
    )


def test_readonly_without_the_key_reads_everything_but_payloads(encrypted: Path) -> None:
    with segwal.open(encrypted, readonly=True) as wal:
        assert (wal.first_lsn, wal.last_lsn) == (1, 100)
        assert segwal.verify(encrypted).ok
        with pytest.raises(segwal.MissingKeyError):
            wal.read(1)
    with segwal.open(encrypted, readonly=True, encryption_key=KEK) as wal:
        assert wal.read(100).payload == b"record 99" + bytes(40)


def test_a_lost_keys_file_is_never_replaced_by_new_keys(encrypted: Path) -> None:
    """Encrypted segments without KEYS: a writer that made new keys would write frames no
    reader could tell from forgeries. It refuses, and changes nothing."""
    (encrypted / "KEYS").unlink()
    before = _files(encrypted)
    with pytest.raises(segwal.MissingKeyError, match="no KEYS"):
        segwal.open(encrypted, encryption_key=KEK)
    assert _files(encrypted) == before
    assert not (encrypted / "KEYS").exists()


def test_an_environment_variable_holds_a_key_not_a_passphrase(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEGWAL_TEST_KEK", "correct horse battery staple 123")  # 32 characters
    with pytest.raises(segwal.ConfigError):
        segwal.EnvKey("SEGWAL_TEST_KEK").kek()


def test_a_readonly_view_finds_log_keys_added_after_it_opened(encrypted: Path) -> None:
    with segwal.open(encrypted, readonly=True, encryption_key=KEK) as view:
        assert view.read(1).payload == b"record 0" + bytes(40)
        segwal.rotate_keys(encrypted, KEK, new_log_key=True)
        with segwal.open(encrypted, encryption_key=KEK, segment_bytes=4096) as wal:
            for i in range(100):
                wal.append(b"new %d" % i)
        assert {p.read_bytes()[96] for p in encrypted.glob("*.wal")} == {1, 2}
        assert [r.payload for r in view.replay(from_lsn=200)] == [b"new 99"]


def test_nonces_drawn_from_many_threads_never_repeat() -> None:
    import threading

    source = NonceSource(limit=5000)  # a few redraws happen while the threads race
    drawn: list[list[bytes]] = [[] for _ in range(4)]

    def draw(out: list[bytes]) -> None:
        for _ in range(5000):
            out.append(source())

    threads = [threading.Thread(target=draw, args=(out,)) for out in drawn]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [n for out in drawn for n in out]
    assert len(every) == len(set(every)) == 20_000
    assert len(source.prefixes) == 4 and len(set(source.prefixes)) == 4
