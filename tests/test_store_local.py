"""The file:// store's durability: its barriers in order, and whole objects after SIGKILL.

An acknowledged ``put_if_absent`` must survive a power loss: the object's data, its
metadata and its directory are fsynced before the rename that publishes it, and the parent
directory after. The order is read from ``strace`` of a real process. A process killed
while putting leaves only whole objects (data and metadata as written) and loses nothing
it had acknowledged.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segwal.archive.local import LocalStore

IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")
SRC = str(Path(__file__).resolve().parent.parent / "src")

PUTTER = """
import sys
sys.path.insert(0, sys.argv[1])
from segwal.archive.local import LocalStore
store = LocalStore(sys.argv[2])
for i in range(int(sys.argv[3])):
    key = "g/1/seg/%08d" % i
    assert store.put_if_absent(key, (b"%08d" % i) * (i % 50 + 1), {"n": str(i)})
    print(key, flush=True)
"""


def body(i: int) -> bytes:
    return (b"%08d" % i) * (i % 50 + 1)


def test_put_if_absent_fsyncs_before_and_after_publishing(tmp_path: Path) -> None:
    strace = shutil.which("strace")
    if strace is None:
        if IN_CI:
            pytest.fail("strace is not installed (CI=true: .ci/run installs it)")
        pytest.skip("strace is not installed (Debian package: strace)")
    root = tmp_path / "archive"
    LocalStore(root)  # made beforehand: only the put is traced
    trace = tmp_path / "trace.txt"
    subprocess.run(
        [
            *(strace, "-f", "-y", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2"),
            *("-o", str(trace), sys.executable, "-c", PUTTER, SRC, str(root), "1"),
        ],
        check=True,
        capture_output=True,
    )
    calls = [
        line.split(None, 1)[1]
        for line in trace.read_text().splitlines()
        if re.search(r"\b(f(data)?sync|rename\w*)\(", line) and str(root) in line
    ]
    names = []
    for call in calls:
        if call.startswith(("fsync", "fdatasync")):
            path = re.search(r"<([^>]*)>", call)
            assert path is not None, call
            names.append(("fsync", os.path.relpath(path.group(1), root)))
        else:
            names.append(("rename", ""))
    fsyncs_before = [name for kind, name in names[: names.index(("rename", ""))]]
    staging = fsyncs_before[-1]  # the object's directory, built under tmp/
    assert staging.startswith("tmp/")
    assert fsyncs_before[-3:] == [f"{staging}/data", f"{staging}/meta", staging]
    assert names[names.index(("rename", "")) + 1] == ("fsync", "o")
    # the LocalStore opened in the child fsynced its directories first (they may be new)
    assert ("fsync", ".") in names[: names.index(("rename", ""))]


def test_sigkill_while_putting_leaves_whole_objects(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    for round_ in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", PUTTER, SRC, str(root), "100000"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        acknowledged = [child.stdout.readline().strip() for _ in range(20 + 37 * round_)]
        time.sleep(0.01 * round_)
        child.send_signal(signal.SIGKILL)
        child.wait()
        acknowledged += child.stdout.read().split()
        child.stdout.close()
        store = LocalStore(root)
        listed = {info.key: info.size for info in store.list("g/1/seg/")}
        assert set(acknowledged) <= set(listed)
        for key, size in listed.items():
            i = int(key.rsplit("/", 1)[1])
            assert size == len(body(i)) and store.get(key) == body(i)
            info = store.head(key)
            assert info is not None and info.metadata == {"n": str(i)}
        # the next run starts where this one stopped: the objects exist, the first put loses
        if listed:
            assert store.put_if_absent(min(listed), b"again") is False
        shutil.rmtree(root)
