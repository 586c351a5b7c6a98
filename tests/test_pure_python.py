"""The core format and recovery tests again, in a fresh process on the pure-Python decoder.

The rest of the suite runs on whichever decoder the build gave (the compiled one wherever a
compiler was present, so in CI). Here a chosen subset, the files that decode frames of every
shape, damaged or not, reruns in a subprocess with ``SEGWAL_PURE_PYTHON=1``, so the pure
reference stays tested as the fallback it is, and a difference between the two paths that
the differential tests (tests/test_speedups.py) miss shows up as a failure of one of them.
Kept to about a minute on a loaded 2-core machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# Frames, records, the scanner and recovery decisions: where a decoder difference matters;
# and single appends, where an encoder difference would.
SUBSET = (
    "test_format.py",
    "test_scanner.py",
    "test_recovery.py",
    "test_recovery_branches.py",
    "test_index.py",
    "test_single_append.py",  # the append fast path on the pure encoder: encode, then pwrite
    "test_fast_appender.py",  # its differential test: the Python fast path against the general
)
# The child checks which decoder it got before running anything: a child that silently ran
# the compiled decoder would make this test prove nothing.
CHILD = """
import sys
import pytest
import segwal
from segwal.format import records
if segwal.DECODER != "python" or records.decode_records is not records.decode_records_py:
    sys.exit(f"the child runs decoder {segwal.DECODER!r}, not the pure one")
sys.exit(pytest.main(sys.argv[1:]))
"""


@pytest.mark.timeout(600)
def test_core_tests_pass_on_the_pure_python_decoder() -> None:
    env = {**os.environ, "SEGWAL_PURE_PYTHON": "1"}
    env.pop("SEGWAL_PURE", None)
    env.pop("PYTEST_ADDOPTS", None)  # e.g. -x or -k from the parent's command line
    args = [
        sys.executable,
        "-c",
        CHILD,
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "console_output_style=classic",
        *(str(TESTS / name) for name in SUBSET),
    ]
    result = subprocess.run(
        args, cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=580
    )
    tail = (result.stdout[-4000:] + result.stderr[-2000:]).strip()
    assert result.returncode == 0, f"the pure-Python run failed:\n{tail}"
    assert " passed" in result.stdout, tail
