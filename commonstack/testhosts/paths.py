"""Where test hosts keep their state and their cached root filesystems."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

STATE_ENV = "COMMONSTACK_TESTHOSTS_DIR"
CACHE_ENV = "COMMONSTACK_ROOTFS_CACHE"

# Subnets and interfaces are machine-wide, so the lock that hands them out is too (it covers
# every state dir).
MACHINE_LOCK = Path("/run/lock/commonstack-testhosts.lock")
LAST_SUBNET = Path("/run/lock/commonstack-testhosts.last-subnet")  # written under MACHINE_LOCK


def state_dir() -> Path:
    return Path(os.environ.get(STATE_ENV) or "/var/lib/commonstack/testhosts")


def rootfs_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or "/var/cache/commonstack/rootfs")


def hosts_dir() -> Path:
    return state_dir() / "hosts"


def host_dir(name: str) -> Path:
    return hosts_dir() / name


CONSOLE_LOG = ".console.log"


def logs_dir() -> Path:
    return state_dir() / "logs"


def console_log(name: str) -> Path:
    """nspawn's output (the boot messages); kept after a failed start, removed by down."""
    return logs_dir() / f"{name}{CONSOLE_LOG}"


def locks_dir() -> Path:
    return state_dir() / "locks"


def owner_tag() -> str:
    """A short tag of the state dir, put in machine-wide names (cgroups, nft tables).

    It lets ``cleanup_stale`` recognise leftovers of *this* state dir without touching hosts
    that another state dir (a test run with its own ``COMMONSTACK_TESTHOSTS_DIR``) is running.
    """
    return hashlib.sha256(str(state_dir().resolve()).encode()).hexdigest()[:8]
