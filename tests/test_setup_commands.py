"""The README's two commands for a fresh clone, and CI running the same test command.

``.ci/run`` must run exactly the README's test command (so CI never tests a setup users do
not get), and that command must install what the tests need: the Ceph packages and
programs that ``cephlib`` starts among them.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import cephlib

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands for a fresh clone", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_the_readme_has_two_commands_and_ci_runs_the_second() -> None:
    commands = readme_commands()
    assert len(commands) == 2 and all("\n" not in command for command in commands)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    steps = [line for line in ci if line.strip() and not line.lstrip().startswith("#")]
    assert steps[-1] == commands[1]


def test_the_test_command_installs_what_the_tests_start() -> None:
    script = ROOT / "scripts" / "test"
    assert readme_commands()[1] == "scripts/test" and os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    packages = re.search(r'^PACKAGES="(.*)"$', text, re.M)
    tools = re.search(r'^TOOLS="(.*)"$', text, re.M)
    assert packages is not None and tools is not None
    assert set(cephlib.PACKAGES.split()) <= set(packages.group(1).split())
    assert set(cephlib.BINARIES) <= set(tools.group(1).split())
    for package in ("strace", "fiu-utils", "valgrind", "gcc"):
        assert package in packages.group(1).split()
