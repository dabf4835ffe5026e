"""Fixtures for integration tests on real local Debian test hosts (systemd-nspawn).

``testhost`` is one bookworm amd64 host shared by the whole session (for tests that only read
from it or make idempotent changes); ``testhost_factory`` makes hosts for one test and always
removes them; ``testhost_ssh`` runs a command on a host over real SSH with its key pinned.
Everything is skipped, with the reason, where test hosts cannot run (not root, not Linux,
systemd-nspawn or debootstrap missing).
"""

from __future__ import annotations

import itertools
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from commonstack import testhosts
from commonstack.testhosts import TestHost, TestHostError
from commonstack.testhosts.paths import STATE_ENV
from commonstack.testhosts.preflight import require_support

# Host names are machine-wide (interfaces): a token per session keeps parallel sessions apart.
_SESSION = secrets.token_hex(2)
_counter = itertools.count(1)

SSHRun = Callable[..., subprocess.CompletedProcess[str]]


def new_host_name() -> str:
    """A fresh, valid host name ("it" + session token + counter, at most 12 characters)."""
    return f"it{_SESSION}-{next(_counter)}"


@pytest.fixture(scope="session")
def testhosts_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's own state dir, so tests never touch a developer's hosts (``try``).

    The rootfs cache stays the machine's: it is built once and reused by every run.
    """
    try:
        require_support()
    except TestHostError as error:
        pytest.skip(f"test hosts unavailable here: {error}")
    state = tmp_path_factory.mktemp("testhosts")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(STATE_ENV, str(state))
        yield state
        for host in testhosts.list_hosts():  # a safety net: fixtures remove their hosts themselves
            testhosts.down(host.name)


@pytest.fixture(scope="session")
def testhost(testhosts_state: Path) -> Iterator[TestHost]:
    """A bookworm amd64 host shared by the session."""
    host = testhosts.up(new_host_name(), suite="bookworm", arch="amd64")
    yield host
    testhosts.down(host.name)


@pytest.fixture
def testhost_factory(testhosts_state: Path) -> Iterator[Callable[..., TestHost]]:
    """``make(**up_options) -> TestHost``; every host made is removed when the test ends."""
    names: list[str] = []

    def make(**options: object) -> TestHost:
        name = new_host_name()
        names.append(name)  # before up: a host that fails half-way is removed too
        return testhosts.up(name, **options)  # type: ignore[arg-type]

    yield make
    failures = []
    for name in names:
        try:
            testhosts.down(name)
        except TestHostError as error:
            failures.append(f"{name}: {error}")
    assert not failures, f"test hosts not removed: {failures}"


@pytest.fixture(scope="session")
def testhost_ssh(tmp_path_factory: pytest.TempPathFactory) -> SSHRun:
    """``run(host, command, timeout=120) -> CompletedProcess``: the ssh binary, key pinned, no prompts."""
    known_hosts_dir = tmp_path_factory.mktemp("known_hosts")

    def run(host: TestHost, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        known_hosts = known_hosts_dir / host.name
        known_hosts.write_text(testhosts.known_hosts_line(host) + "\n")
        options = {
            "UserKnownHostsFile": known_hosts,
            "GlobalKnownHostsFile": "/dev/null",
            "StrictHostKeyChecking": "yes",
            "BatchMode": "yes",
            "IdentitiesOnly": "yes",
            "ConnectTimeout": "10",
            "LogLevel": "ERROR",
        }
        argv = ["ssh", "-i", str(host.key_path), "-p", str(host.port)]
        for key, value in options.items():
            argv += ["-o", f"{key}={value}"]
        return subprocess.run(
            [*argv, f"{host.user}@{host.address}", command], capture_output=True, text=True, timeout=timeout
        )

    return run
