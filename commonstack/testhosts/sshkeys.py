"""SSH for test hosts: the state dir's client key, each host's own host key, waiting for sshd."""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from commonstack.inventories.known_hosts import host_pattern

from . import paths
from .commands import run
from .errors import TestHostError
from .state import TestHost

def ssh_key_path() -> Path:
    """The private key (ed25519, mode 0600) that logs in as root on every host of this state dir."""
    key_dir = paths.state_dir() / "ssh"
    key = key_dir / "id_ed25519"
    if key.exists():
        return key
    paths.state_dir().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ssh-", dir=paths.state_dir()))  # mode 0700
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "commonstack-testhosts", "-f", str(tmp / key.name)])
    try:
        tmp.rename(key_dir)  # atomic; when a concurrent caller won the race, its key stays
    except OSError:
        shutil.rmtree(tmp)
    return key


def public_key() -> str:
    return Path(f"{ssh_key_path()}.pub").read_text().strip()


def generate_host_key(root: Path, name: str) -> str:
    """Give a host its own ed25519 host key (the cached rootfs has none); returns the public line."""
    key = root / "etc/ssh/ssh_host_ed25519_key"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}", "-f", str(key)])
    return Path(f"{key}.pub").read_text().strip()


def known_hosts_line(host: TestHost) -> str:
    """The line that pins ``host``'s key in a known_hosts file (``StrictHostKeyChecking=yes``)."""
    key_type, key = host.host_key.split()[:2]
    return f"{host_pattern(host.address, host.port)} {key_type} {key}"


def wait_for_sshd(host: str, address: str, failure: Callable[[], str | None], timeout: float, port: int = 22) -> None:
    """Until sshd sends its banner; fails early once ``failure()`` names a reason it never will."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=1) as conn:
                conn.settimeout(5)
                if conn.recv(4) == b"SSH-":
                    return
        except OSError:
            pass
        console = paths.console_log(host)
        if reason := failure():
            raise TestHostError(f"test host {host} cannot be reached: {reason}; see {console}")
        if time.monotonic() > deadline:
            raise TestHostError(
                f"test host {host}: sshd did not answer on {address}:{port} in {timeout:.0f}s; see {console}"
            )
        time.sleep(0.1)
