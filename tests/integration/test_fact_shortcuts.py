"""The fact batches' cheaper commands answer as the commands they stand for, on a real booted
Debian host (the session's bare test host, whose accounts and units are Debian's own):
pyinfra's Users fact (deploys/fact_shortcuts.py), systemd's unit states asked at once, and the
pending security updates read only when the security archive has something newer
(stacks/updates.py). Nothing on the host is changed but its package lists, refreshed."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable

import pytest

from commonstack.deploys import pyinfra_api as api
from commonstack.deploys.fact_shortcuts import USERS, paths_at_once, shortcut, units_at_once
from commonstack.stacks.updates import PENDING_COMMAND, SIMULATED_UPGRADE, pending_security_updates
from commonstack.testhosts import TestHost
from tests.unit.pyinfra_tables import load_fact

pytestmark = pytest.mark.integration

SSH = Callable[..., subprocess.CompletedProcess[str]]  # testhost_ssh


def test_the_users_shortcut_prints_what_pyinfra_prints(testhost: TestHost, testhost_ssh: SSH) -> None:
    ours = testhost_ssh(testhost, f"sh -c {shlex.quote(USERS)}")
    theirs = testhost_ssh(testhost, f"sh -c {shlex.quote(shortcut(USERS))}")
    assert ours.returncode == theirs.returncode == 0, ours.stderr + theirs.stderr
    assert "root:x:0:0:" in ours.stdout and "sshd:" in ours.stdout
    assert theirs.stdout == ours.stdout


def asked(fact: type, unit: str) -> str:
    """The command pyinfra sends for `fact` of one unit (its "command -v systemctl" guard included)."""
    [command] = load_fact(fact, {"services": [unit], "user_mode": False}, [])[1]
    return command


def side_by_side(testhost: TestHost, testhost_ssh: SSH, alone: list[str], together) -> tuple[list[list[str]], list]:
    """(the stdout lines of each command of `alone` run alone on the host, each succeeding
    silently; what `together`'s answer splits into)."""
    expected = [testhost_ssh(testhost, f"sh -c {shlex.quote(command)}") for command in alone]
    assert all(done.returncode == 0 and not done.stderr for done in expected)
    merged = testhost_ssh(testhost, f"sh -c {shlex.quote(together.command)}")
    return [done.stdout.splitlines() for done in expected], together.split(
        merged.returncode, merged.stdout.splitlines(), merged.stderr.splitlines()
    )


@pytest.mark.parametrize("fact", [api.SystemdStatus, api.SystemdEnabled])
def test_units_asked_at_once_answer_as_each_alone(testhost: TestHost, testhost_ssh: SSH, fact) -> None:
    # running, static, masked or missing, and an alias (sshd.service names ssh.service)
    units = ["ssh.service", "sshd.service", "systemd-journald.service", "no-such.service", "timers.target"]
    alone = [asked(fact, unit) for unit in units]
    [together] = units_at_once(alone)
    expected, split = side_by_side(testhost, testhost_ssh, alone, together)
    assert split == expected
    assert split[1][0] == "Id=ssh.service"  # the alias answers for its unit, alone as together


def test_paths_stated_at_once_answer_as_each_alone(testhost: TestHost, testhost_ssh: SSH) -> None:
    # a file, a folder, a symbolic link, a missing path (the host's own stat and dash)
    paths = ["/etc/passwd", "/etc", "/etc/localtime", "/no/such/path"]
    alone = [api.raw_command(api.File().command(path)) for path in paths]
    [together] = paths_at_once(alone)
    expected, split = side_by_side(testhost, testhost_ssh, alone, together)
    assert split == expected
    assert split[2][0].startswith("user=root") and " -> " in split[2][0] and split[3] == []


def test_pending_security_updates_read_as_the_full_simulation_reads_them(testhost: TestHost, testhost_ssh: SSH) -> None:
    refreshed = testhost_ssh(testhost, "apt-get update -qq", timeout=300)
    assert refreshed.returncode == 0, refreshed.stderr
    full = testhost_ssh(testhost, f"{SIMULATED_UPGRADE} | grep '^Inst ' || true", timeout=120)
    cheap = testhost_ssh(testhost, PENDING_COMMAND, timeout=120)
    assert pending_security_updates(cheap.stdout.splitlines()) == pending_security_updates(full.stdout.splitlines())
