"""What is known about each test host: ``HOSTS_DIR/NAME/state.json``, and the public ``TestHost``."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from . import paths
from .network import Subnet
from .processes import Proc

STARTING, RUNNING, STALE = "starting", "running", "stale"


@dataclass(frozen=True, kw_only=True)
class TestHost:
    """A local Debian machine reachable over SSH like a VPS."""

    __test__ = False  # not a pytest test class, despite the name

    name: str
    address: str
    port: int = 22
    user: str = "root"
    key_path: Path
    suite: str
    arch: str
    memory_mb: int | None = None  # the cgroup limit; the host's /proc/meminfo shows the machine's RAM
    host_key: str  # the host's SSH public key line, to pin in known_hosts
    status: str = RUNNING  # running | starting | stale


@dataclass(kw_only=True)
class HostRecord:
    """A host's request, its resources and its processes, saved as each comes to exist."""

    name: str
    suite: str
    arch: str
    memory_mb: int | None
    trust_controller_ca: bool
    status: str = STARTING
    subnet: int | None = None
    host_key: str = ""
    nspawn: Proc | None = None
    init: Proc | None = None  # the container's systemd

    def to_host(self, status: str, key_path: Path) -> TestHost:
        return TestHost(
            name=self.name,
            address=Subnet(self.subnet).address if self.subnet else "",
            key_path=key_path,
            suite=self.suite,
            arch=self.arch,
            memory_mb=self.memory_mb,
            host_key=self.host_key,
            status=status,
        )


def _file(name: str) -> Path:
    return paths.host_dir(name) / "state.json"


def save(record: HostRecord) -> None:
    """Write atomically: a crash leaves the old state or the new one, never half of one."""
    target = _file(record.name)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2))
    os.replace(tmp, target)


def load(name: str) -> HostRecord | None:
    try:
        data = json.loads(_file(name).read_text())
    except FileNotFoundError:
        return None
    for key in ("nspawn", "init"):
        data[key] = Proc(**data[key]) if data.get(key) else None
    return HostRecord(**data)


def names() -> list[str]:
    """Hosts with a folder in the state dir, whatever state they are in."""
    hosts = paths.hosts_dir()
    return sorted(p.name for p in hosts.iterdir() if p.is_dir()) if hosts.is_dir() else []
