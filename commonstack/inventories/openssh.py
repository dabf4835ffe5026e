"""Reaching a group's hosts with OpenSSH: the health checks (checks/), the backups (backups/) and
the early fact batch (deploys/early_batch.py) share this ssh_config. pyinfra's deploys go
through paramiko (deploys/connect.py), with the same target: user, port, key, pinned host key."""

from __future__ import annotations

import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from commonstack.formats import ssh_config as ssh_config_value

if TYPE_CHECKING:
    from commonstack.inventories.targets import HostTarget

CONNECT_TIMEOUT = 10  # seconds, for the first connection to each host


def ssh_config(hosts: list[HostTarget], control_dir: Path | None = None) -> str:
    """An ssh_config with one alias per host, so that `ssh NAME` (testinfra's `ssh://NAME`) is
    strict and key-only.

    With `control_dir`, every command to a host shares one connection (ControlMaster).
    """
    blocks = []
    for h in hosts:
        # Each value quoted for ssh_config (formats.py): none can end its line and start another
        # keyword (a ProxyCommand would run a local command).
        lines = [
            f"Host {ssh_config_value(h.name)}",
            f"  HostName {ssh_config_value(h.address)}",
            f"  Port {int(h.port)}",
            f"  User {ssh_config_value(h.user)}",
            f"  UserKnownHostsFile {ssh_config_value(str(h.known_hosts.resolve()), tokens=True)}",
            "  GlobalKnownHostsFile /dev/null",
            "  StrictHostKeyChecking yes",
            "  BatchMode yes",
            "  LogLevel ERROR",
            f"  ConnectTimeout {CONNECT_TIMEOUT}",
            "  ServerAliveInterval 15",
        ]
        if kex := key_exchanges():
            lines.append(f"  KexAlgorithms {kex}")
        if h.key_path:
            lines += [f"  IdentityFile {ssh_config_value(str(h.key_path.resolve()), tokens=True)}", "  IdentitiesOnly yes"]
        if control_dir:
            # %n, the host's name here, keeps the socket's path short (a unix socket's is limited).
            control_path = ssh_config_value(str(control_dir), tokens=True, suffix="/%n")
            lines += [f"  ControlPath {control_path}", "  ControlMaster auto", "  ControlPersist 120"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


# Key exchanges that cost a small machine little CPU: the hybrid post-quantum one of OpenSSH 9.9 and
# later, and curve25519. An algorithm's name, as `ssh -G` prints one (nothing else is written).
QUICK_KEX = ("mlkem768x25519-sha256", "curve25519-sha256")
_KEX_NAME = re.compile(r"[A-Za-z0-9@._-]+")


@cache
def key_exchanges() -> str | None:
    """This ssh client's own default key exchanges, the quick ones first (QUICK_KEX, those it
    has); None when they are first already, or it cannot say. Nothing outside its defaults is allowed.

    OpenSSH 9.0 to 9.8 (Debian 12's 9.2) try sntrup761x25519 first, and later ones second (after
    ML-KEM, which a Debian 12 host's sshd lacks): its code costs the client 0.10-0.15 s of CPU per
    connection on a small machine, most of a check's connection time, 8 times over for 8 hosts.
    ML-KEM, post-quantum as well, comes first, then curve25519: the exchange of the deploy's own
    connections (pyinfra's paramiko), which carry the group's secrets. These carry none: the
    checks' (the Matrix login runs on the host, the secret scan sends keyed digests) and the
    backup commands' (backups/remote.py: what a snapshot holds travels from host to repository),
    and the early fact batch's (deploys/early_batch.py: the facts a plan reads over paramiko too,
    its commands kept free of secrets).
    """
    try:
        said = subprocess.run(["ssh", "-F", os.devnull, "-G", "commonstack-check"], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=10).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    listed = next((line.split(" ", 1)[1] for line in said.splitlines() if line.startswith("kexalgorithms ")), "")
    return quick_first([name for name in listed.split(",") if name])


def quick_first(default: list[str]) -> str | None:
    """`default` (a client's key exchanges, in its order) with the quick ones first, as a
    KexAlgorithms value; None when they are first already, or a name is not one."""
    if not all(_KEX_NAME.fullmatch(name) for name in default):
        return None
    quick = [name for name in QUICK_KEX if name in default]
    ordered = quick + [name for name in default if name not in quick]
    return ",".join(ordered) if ordered != default else None
