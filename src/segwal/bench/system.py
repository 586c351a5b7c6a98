"""The machine a run is on, and dropping the page cache for the cold workloads."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import segwal

DROP_CACHES = "/proc/sys/vm/drop_caches"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def filesystem(path: str) -> dict[str, str]:
    """The file system ``path`` is on: /proc/mounts (longest mount prefix) and stat -f."""
    real = os.path.realpath(path)
    info = {"fstype": "unknown", "device": "?", "mountpoint": "?", "statfs": "?"}
    best = -1
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                device, mnt, fstype = (p.replace("\\040", " ") for p in parts[:3])
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) > best:
                    best = len(mnt)
                    info.update(fstype=fstype, device=device, mountpoint=mnt)
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["stat", "-f", "-c", "%T", real], capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0:
            info["statfs"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    rot = Path(f"/sys/block/{os.path.basename(info['device'])}/queue/rotational")
    if rot.exists():
        info["rotational"] = rot.read_text().strip()
    return info


def in_memory(fs: dict[str, str]) -> bool:
    return fs["fstype"] in ("tmpfs", "ramfs") or fs["statfs"] in ("tmpfs", "ramfs")


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return [0.0, 0.0, 0.0]


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 0


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine(path: str, libraries: dict[str, str]) -> dict[str, Any]:
    """CPU, cores, kernel, file system of ``path``, Python and library versions, load."""
    versions = {"python": f"{platform.python_implementation()} {platform.python_version()}"}
    versions |= libraries
    versions["segwal decoder"] = segwal.DECODER  # "c", or "python" (no compiler, SEGWAL_PURE)
    for extra in ("matplotlib", "rich", "click"):
        got = package_version(extra)
        if got:
            versions[extra] = got
    return {
        "nproc": usable_cpus(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "versions": versions,
        "loadavg_start": loadavg(),
        "dir": path,
        "filesystem": filesystem(path),
        "argv": sys.argv,
    }


class CacheDropper:
    """Evicts a directory's files from the page cache before a cold run.

    First choice: ``sync`` then write 1 to /proc/sys/vm/drop_caches (the whole page cache,
    needs root outside a container). When that is not permitted: ``fsync`` each file under
    the directory (dirty pages cannot be dropped) and ``posix_fadvise(POSIX_FADV_DONTNEED)``
    on it. ``method`` says which one the run used.
    """

    def __init__(self) -> None:
        self.method: str | None = None  # "drop_caches" or "fadvise", once used
        self.why = ""  # why drop_caches was not used

    def __call__(self, path: str) -> None:
        if self.method in (None, "drop_caches") and self._drop_caches():
            self.method = "drop_caches"
            return
        self.method = "fadvise"
        self._fadvise(path)

    def _drop_caches(self) -> bool:
        try:
            os.sync()
            with open(DROP_CACHES, "w") as f:
                f.write("1\n")
        except OSError as exc:
            self.why = f"{DROP_CACHES}: {exc.strerror or exc}"
            return False
        return True

    @staticmethod
    def _fadvise(path: str) -> None:
        for root, _dirs, files in os.walk(path):
            for name in files:
                file = os.path.join(root, name)
                try:
                    fd = os.open(file, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.fsync(fd)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)

    def describe(self) -> str:
        if self.method == "drop_caches":
            return f"`sync` and `echo 1 > {DROP_CACHES}` before each cold run"
        if self.method == "fadvise":
            return (
                f"{DROP_CACHES} not writable ({self.why}); instead `fsync` and "
                "`posix_fadvise(POSIX_FADV_DONTNEED)` on every file of the contender's "
                "directory before each cold run"
            )
        return "no cold run"
