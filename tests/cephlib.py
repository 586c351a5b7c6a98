"""A throwaway one-host Ceph (one monitor, one memstore OSD, radosgw) for the S3 tests.

Everything lives in one directory: the configuration, the monitor's store, the OSD (its
objects are in RAM: ``memstore``), logs, a self-signed certificate, and ``cluster.json``
with the endpoints, keys and process ids. The gateway listens on 127.0.0.1 twice: plain
HTTP and TLS (beast's ``ssl_endpoint``), on free ports. Authentication inside the cluster
is off; S3 requests are signed with the keys of one user made at start. Stopping is
SIGKILL: the data is in RAM anyway, and SIGTERM lingers for seconds.

Used by ``tests/ceph_fixture.py`` (once per test session) and by hand::

    python tests/cephlib.py start DIR      # prints the endpoints as JSON
    eval "$(python tests/cephlib.py env DIR)"   # AWS_* variables for the plain endpoint
    python tests/cephlib.py stop DIR

Needs Debian's ``radosgw ceph-mon ceph-osd`` (``apt-get install -y
--no-install-recommends radosgw ceph-mon ceph-osd``) and ``openssl``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "openssl")
PACKAGES = "radosgw ceph-mon ceph-osd"
INSTALL_HINT = f"apt-get install -y --no-install-recommends {PACKAGES} openssl"
ACCESS_KEY = "SEGWALTESTACCESSKEY0"
SECRET_KEY = "segwal-test-secret-key-0123456789abcdefgh"
START_TIMEOUT = 30.0
# The processes this interpreter started, to reap them when stopped.
_PROCESSES: dict[int, subprocess.Popen[bytes]] = {}
# A watchdog per cluster started with ``watchdog=True``: it reads the daemons' pids on a pipe
# and SIGKILLs them when the pipe closes, so a test run killed with SIGKILL (a CI timeout)
# leaves no Ceph behind.
WATCHDOG = """
import os, signal, sys
pids = [int(line) for line in sys.stdin]
for pid in pids:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
"""
_WATCHDOGS: dict[str, subprocess.Popen[bytes]] = {}

CONF = """\
[global]
fsid = {fsid}
mon initial members = a
mon host = [v2:127.0.0.1:{mon_port},v1:127.0.0.1:{mon_port_v1}]
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
keyring = /dev/null
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
osd crush chooseleaf type = 0
mon data avail crit = 0
mon data avail warn = 0
paxos propose interval = 0.05
paxos min wait = 0.01
run dir = {dir}/run
admin socket = {dir}/run/$name.asok
log file = {dir}/log/$name.log
mon cluster log file = {dir}/log/cluster.log
erasure code dir = /usr/lib/x86_64-linux-gnu/ceph/erasure-code
osd objectstore = memstore
memstore device bytes = {memstore_bytes}

[mon.a]
mon data = {dir}/mon

[osd.0]
osd data = {dir}/osd

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{http_port} ssl_endpoint=127.0.0.1:{https_port} \
ssl_certificate={dir}/tls/cert.pem ssl_private_key={dir}/tls/key.pem
rgw data = {dir}/rgw
rgw thread pool size = 64
# Deleted objects' tails (beyond the first 4 MiB) are freed by garbage collection, by default
# after two hours: the memory store would fill up (and a full OSD blocks writes, no error).
rgw gc obj min wait = 1
rgw gc processor period = 2
rgw gc processor max time = 2
"""


@dataclass
class Cluster:
    """A running cluster: where it lives, how to reach it, which processes to kill."""

    dir: str
    http: str
    https: str
    ca_bundle: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = "us-east-1"
    pids: list[int] = field(default_factory=list)

    def env(self, tls: bool = False) -> dict[str, str]:
        """The standard AWS variables that point a client at this cluster."""
        env = {
            "AWS_ENDPOINT_URL": self.https if tls else self.http,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }
        if tls:
            env["AWS_CA_BUNDLE"] = self.ca_bundle
        return env

    def save(self) -> None:
        Path(self.dir, "cluster.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> Cluster:
        return cls(**json.loads(Path(directory, "cluster.json").read_text()))


class CephError(RuntimeError):
    """The cluster did not start; the message carries the tail of the failing log."""


def missing() -> list[str]:
    """The programs this needs that are not installed (empty when it can run)."""
    return [name for name in BINARIES if shutil.which(name) is None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path.name})"


def _run(conf: Path, *args: str, timeout: float = 60.0) -> str:
    done = subprocess.run(
        [*args, "-c", str(conf)], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise CephError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _make_certificate(tls: Path) -> None:
    tls.mkdir()
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7"),
            *("-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem")),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )


def _wait_http(url: str, deadline: float, log: Path, context: object = None) -> None:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as answer:
                answer.read()
                return
        except urllib.error.HTTPError:
            return  # an S3 error document is an answer: the gateway is up
        except OSError as exc:
            if time.monotonic() > deadline:
                raise CephError(f"{url} did not answer ({exc}); {log}:\n{_tail(log)}") from exc
            time.sleep(0.1)


def start(
    directory: str | Path, memstore_bytes: int = 4 << 30, *, watchdog: bool = False
) -> Cluster:
    """Start a cluster in ``directory`` (created; must not hold one) and wait for S3.

    With ``watchdog`` the cluster dies with this process, however it ends."""
    if absent := missing():
        raise CephError(f"not installed: {', '.join(absent)} (install: {INSTALL_HINT})")
    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("run", "log", "mon", "osd", "rgw"):
        (root / sub).mkdir()
    _make_certificate(root / "tls")
    http_port, https_port = free_port(), free_port()
    conf = root / "ceph.conf"
    conf.write_text(
        CONF.format(
            fsid=uuid.uuid4(),
            mon_port=free_port(),
            mon_port_v1=free_port(),
            dir=root,
            http_port=http_port,
            https_port=https_port,
            memstore_bytes=memstore_bytes,
        )
    )
    cluster = Cluster(
        dir=str(root),
        http=f"http://127.0.0.1:{http_port}",
        https=f"https://127.0.0.1:{https_port}",
        ca_bundle=str(root / "tls" / "cert.pem"),
    )
    if watchdog:
        _WATCHDOGS[cluster.dir] = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG], stdin=subprocess.PIPE, start_new_session=True
        )
    deadline = time.monotonic() + START_TIMEOUT
    try:
        _run(conf, "ceph-mon", "--mkfs", "-i", "a")
        _spawn(cluster, conf, "ceph-mon", "-f", "-i", "a")
        osd_uuid = str(uuid.uuid4())  # the monitor ignores the boot of an OSD with another
        osd_id = _run(conf, "ceph", "osd", "create", osd_uuid).strip()
        _run(conf, "ceph", "osd", "crush", "add", f"osd.{osd_id}", "1.0", "root=default")
        _run(conf, "ceph-osd", "--mkfs", "-i", osd_id, "--osd-uuid", osd_uuid)
        _spawn(cluster, conf, "ceph-osd", "-f", "-i", osd_id)
        _spawn(cluster, conf, "radosgw", "-f", "-n", "client.rgw")
        _wait_http(cluster.http, deadline, root / "log" / "client.rgw.log")
        _run(
            conf,
            "radosgw-admin",
            *("user", "create", "--uid", "segwal", "--display-name", "segwal tests"),
            *("--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY),
        )
        import ssl

        context = ssl.create_default_context(cafile=cluster.ca_bundle)
        _wait_http(cluster.https, deadline, root / "log" / "client.rgw.log", context)
    except BaseException:
        stop(cluster)
        raise
    return cluster


def _spawn(cluster: Cluster, conf: Path, *args: str) -> None:
    log = Path(cluster.dir, "log", f"{args[0]}.stderr")
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [*args, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the tests does not reach it; stop() does
        )
    _PROCESSES[process.pid] = process
    if (guard := _WATCHDOGS.get(cluster.dir)) is not None and guard.stdin is not None:
        guard.stdin.write(b"%d\n" % process.pid)
        guard.stdin.flush()
    cluster.pids.append(process.pid)
    cluster.save()


def _running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def stop(cluster: Cluster) -> None:
    """SIGKILL every process of the cluster and wait for them (no zombies)."""
    if (guard := _WATCHDOGS.pop(cluster.dir, None)) is not None:
        guard.kill()  # first: once the daemons are reaped, their pids may be reused
        guard.wait()
        if guard.stdin is not None:
            guard.stdin.close()
    for pid in reversed(cluster.pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    orphans = []
    for pid in reversed(cluster.pids):
        if pid in _PROCESSES:
            _PROCESSES.pop(pid).wait()
        else:  # started by another process (``cephlib.py start``): not our child to reap
            orphans.append(pid)
    # A daemon in an uninterruptible wait (a disk write) dies only when it ends: wait for it,
    # as for our own children, so a caller never finds one still running.
    deadline = time.monotonic() + 60
    while orphans and time.monotonic() < deadline:
        orphans = [pid for pid in orphans if _running(pid)]
        if orphans:
            time.sleep(0.05)
    cluster.pids.clear()
    if Path(cluster.dir).is_dir():
        cluster.save()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "env"])
    parser.add_argument("dir")
    parser.add_argument("--tls", action="store_true", help="env: the TLS endpoint")
    args = parser.parse_args(argv)
    if args.command == "start":
        try:
            cluster = start(args.dir)
        except CephError as exc:
            print(f"ceph: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(asdict(cluster), indent=2))
    elif args.command == "stop":
        stop(Cluster.load(args.dir))
    else:
        for name, value in Cluster.load(args.dir).env(args.tls).items():
            print(f"export {name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
