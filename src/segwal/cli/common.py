"""What every ``segwal`` command shares: exit codes, errors shown with a hint, the mapping
of segwal's exceptions to them, JSON and table output, RFC 3339 times, and the parsing of
durations and sizes."""

from __future__ import annotations

import contextlib
import errno
import json
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO, cast

import click

import segwal
from segwal.cli.demo import DemoError

EXIT_OK = 0
EXIT_CORRUPT = 1
EXIT_USAGE = 2
EXIT_IO = 3
EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool killed by a closed pipe


class Failure(click.ClickException):
    """An error shown as ``segwal: error: ...`` with a hint, ending with ``exit_code``."""

    def __init__(self, message: str, *, hint: str = "", exit_code: int = EXIT_CORRUPT) -> None:
        super().__init__(message)
        self.hint = hint
        # click reads exit_code per instance; its stubs declare a class variable.
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        click.echo(f"segwal: error: {self.format_message()}", err=True)
        if self.hint:
            click.echo(f"segwal: hint: {self.hint}", err=True)


class _Pacified:
    """A stream whose flush ignores a broken pipe (what is left for it can go nowhere)."""

    def __init__(self, wrapped: TextIO) -> None:
        self._wrapped = wrapped

    def flush(self) -> None:
        try:
            self._wrapped.flush()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


def quiet_stdout() -> None:
    """After a broken pipe on stdout: let the flush at exit drop what is still buffered
    instead of raising again (and turning the exit code into 120)."""
    sys.stdout = cast(TextIO, _Pacified(sys.stdout))


def warn(message: str) -> None:
    click.echo(f"segwal: warning: {message}", err=True)


def rfc3339(us: int) -> str:
    """An RFC 3339 UTC time with microseconds from microseconds since the epoch."""
    seconds, micros = divmod(us, 1_000_000)
    moment = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339_or_none(us: int) -> str | None:
    return rfc3339(us) if us else None


def storage_failure(exc: OSError, directory: str) -> Failure:
    code = exc.errno
    if code == errno.ENOENT:
        return Failure(
            f"{directory}: no such directory",
            hint="check the path; a segwal log is a directory of 00000000000000000001.wal files",
            exit_code=EXIT_IO,
        )
    if code == errno.ENOTDIR:
        return Failure(
            f"{directory}: not a directory",
            hint="pass the log's directory, not one of its files",
            exit_code=EXIT_IO,
        )
    if code in (errno.EACCES, errno.EPERM):
        return Failure(
            f"{directory}: permission denied ({exc})",
            hint="run as a user who can read the log's files",
            exit_code=EXIT_IO,
        )
    return Failure(
        f"I/O error on {directory}: {exc}",
        hint="check the disk and the file system (dmesg), then try again",
        exit_code=EXIT_IO,
    )


@contextlib.contextmanager
def errors(directory: str) -> Iterator[None]:
    """Turn segwal's exceptions into messages that say what to try next, and exit codes."""
    try:
        yield
    except segwal.UnsupportedFormatError as exc:
        # Not corruption (FORMAT.md): the data is fine, this segwal is too old for it. Like
        # a usage error, the fix is on the caller's side, and retrying will not help.
        hint = exc.hint or "upgrade segwal (pip install -U segwal) to read this log"
        raise Failure(str(exc), hint=hint, exit_code=EXIT_USAGE) from exc
    except (segwal.WrongKeyError, segwal.MissingKeyError) as exc:
        # The data is fine; the key given (or its absence) is the caller's to fix.
        raise Failure(
            str(exc),
            hint="give the log's key-encryption key (--kek-file); 'segwal keys list "
            f"{shlex.quote(directory)}' shows its keys",
            exit_code=EXIT_USAGE,
        ) from exc
    except segwal.CorruptionError as exc:
        raise Failure(
            f"corruption: {exc}",
            hint=f"run 'segwal verify {directory}' for a per-segment report",
            exit_code=EXIT_CORRUPT,
        ) from exc
    except segwal.LockError as exc:
        holder = f"process {exc.pid}" if exc.pid else "another process"
        raise Failure(
            f"{directory} is locked by {holder}, which is writing the log",
            hint="stop that writer or use another directory; 'segwal info', 'segwal dump' "
            "and --dry-run can read a locked log",
            exit_code=EXIT_IO,
        ) from exc
    except segwal.ConfigError as exc:
        raise Failure(str(exc), hint="see 'segwal --help'", exit_code=EXIT_USAGE) from exc
    except segwal.HoldError as exc:
        where = shlex.quote(directory)
        release = f"segwal holds {where} --release {shlex.quote(exc.name)}"
        if exc.name.startswith("cursor:"):
            release += " --yes"  # it deletes a consumer's position
        raise Failure(
            str(exc),
            hint=f"list holds with 'segwal holds {where}'; release one with '{release}'",
            exit_code=EXIT_USAGE,
        ) from exc
    except segwal.ReaderFellBehindError as exc:
        raise Failure(
            str(exc), hint="the log was pruned while it was read; run again", exit_code=EXIT_IO
        ) from exc
    except segwal.NotFoundError as exc:
        raise Failure(
            str(exc), hint=f"'segwal info {directory}' shows the LSNs", exit_code=EXIT_USAGE
        ) from exc
    except segwal.StorageError as exc:
        raise storage_failure(exc, directory) from exc
    except segwal.WalFailedError as exc:
        raise Failure(str(exc), hint="check the disk, then run again", exit_code=EXIT_IO) from exc
    except DemoError as exc:
        raise Failure(str(exc), hint=exc.hint, exit_code=exc.exit_code) from exc
    except segwal.SegwalError as exc:
        raise Failure(str(exc), exit_code=EXIT_CORRUPT) from exc
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            raise  # stdout closed early (segwal dump | head): click handles it quietly
        raise storage_failure(exc, directory) from exc


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, sort_keys=False))


def render_table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def lsn_range(first: int, last: int) -> str:
    return f"{first}..{last}" if last >= first else "-"


# -- durations and sizes -----------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.I)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.I)
_SIZE_UNITS = {"": 1, "b": 1}
for _i, _letter in enumerate("kmgtp", start=1):
    _SIZE_UNITS[_letter] = 1024**_i  # K, M, G: binary, as dd and most tools read them
    _SIZE_UNITS[f"{_letter}ib"] = 1024**_i
    _SIZE_UNITS[f"{_letter}b"] = 1000**_i


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` or ``1.5h`` (a bare number: seconds)."""
    match = _DURATION.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _DURATION_UNITS:
        raise ValueError(f"{text!r} is not a duration; use a number and s, m, h, d or w: 90s, 7d")
    seconds = float(match.group(1)) * _DURATION_UNITS[unit]
    if seconds <= 0:
        raise ValueError(f"{text!r}: the duration must be more than zero")
    return seconds


def parse_size(text: str) -> int:
    """Bytes in ``512KiB``, ``10GiB``, ``1GB`` or ``1.5M`` (KiB, MiB...: 1024; KB, MB...: 1000;
    K, M, G alone: 1024; a bare number: bytes)."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size; use a number and B, KiB, MiB, GiB, KB, MB, GB")
    size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size < 1:
        raise ValueError(f"{text!r}: the size must be at least 1 byte")
    return size


if TYPE_CHECKING:
    _ParamType = click.ParamType[Any]
else:  # click < 8.3 has no type parameters at runtime
    _ParamType = click.ParamType


class _Parsed(_ParamType):
    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self._parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = _Parsed("duration", parse_duration)
SIZE = _Parsed("size", parse_size)


def kek_option(func: Callable[..., None]) -> Callable[..., None]:
    """--kek-file (or SEGWAL_KEK_FILE): the key-encryption key of an encrypted log, for the
    commands that read payloads or open the log as its writer."""
    return click.option(
        "--kek-file",
        type=click.Path(dir_okay=False),
        envvar="SEGWAL_KEK_FILE",
        help="An encrypted log's key-encryption key, in a file (32 raw bytes, 64 hex digits "
        "or base64); also SEGWAL_KEK_FILE.",
    )(func)


def key_options(kek_file: str | None) -> dict[str, Any]:
    """segwal.open's options for ``--kek-file``."""
    return {} if kek_file is None else {"encryption": segwal.KeyFile(kek_file)}
