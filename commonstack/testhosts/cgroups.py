"""A cgroup per test host: its memory limit, its process list, its cleanup.

PID 1 here is not systemd, so nobody hands out delegated cgroups: we create
``commonstack-TAG/NAME`` ourselves in the cgroup v1 ``memory`` hierarchy (the limit) and in
the ``name=systemd`` and v2 ``unified`` hierarchies (with ``--keep-unit`` nspawn puts the
container in ``payload/`` below its own cgroup; without a cgroup of its own, every host would
share ``/payload``). nspawn is started inside them, so the whole container inherits them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from pathlib import Path

from . import paths
from .errors import TestHostError

ROOT = Path("/sys/fs/cgroup")
MEMORY = "memory"
_HIERARCHIES = (MEMORY, "systemd", "unified")
_SIZE = re.compile(r"(\d+)\s*([MG])(?:I?B)?", re.IGNORECASE)


def parse_memory(memory: str | int | None) -> int | None:
    """'2G' / '512M' / 1024 (MB) -> megabytes."""
    if memory is None:
        return None
    if isinstance(memory, int):
        megabytes = memory
    else:
        match = _SIZE.fullmatch(memory.strip())
        if not match:
            raise TestHostError(f"test host memory {memory!r}: expected a size like '1G' or '512M'")
        megabytes = int(match[1]) * (1024 if match[2].upper() == "G" else 1)
    if megabytes < 128:
        raise TestHostError(f"test host memory {memory!r}: at least 128M is needed to boot Debian")
    return megabytes


def _parent(hierarchy: str) -> Path:
    return ROOT / hierarchy / f"commonstack-{paths.owner_tag()}"


def _group(hierarchy: str, name: str) -> Path:
    return _parent(hierarchy) / name


def _hierarchies() -> list[str]:
    if not (ROOT / MEMORY / "memory.limit_in_bytes").exists():
        raise TestHostError(
            "test hosts need the cgroup v1 memory controller at /sys/fs/cgroup/memory "
            "(a machine not booted with systemd, hybrid cgroup layout); this machine has another layout"
        )
    return [h for h in _HIERARCHIES if (ROOT / h / "cgroup.procs").exists()]


def create(name: str, memory_mb: int | None) -> list[Path]:
    """Create the host's cgroups; returns the ``cgroup.procs`` files nspawn must join."""
    procs = []
    for hierarchy in _hierarchies():
        group = _group(hierarchy, name)
        try:
            group.mkdir(parents=True, exist_ok=True)
        except FileNotFoundError:  # another host's teardown removed the empty parent meanwhile
            group.mkdir(parents=True, exist_ok=True)
        procs.append(group / "cgroup.procs")
    if memory_mb is not None:
        limit = str(memory_mb * 1024 * 1024)
        memory = _group(MEMORY, name)
        (memory / "memory.limit_in_bytes").write_text(limit)
        # No swapping past the limit either, when swap accounting exists (memsw >= limit).
        memsw = memory / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            memsw.write_text(limit)
    return procs


def memory_limit_file(name: str) -> Path:
    return _group(MEMORY, name) / "memory.limit_in_bytes"


def memory_usage_bytes(name: str) -> int:
    """Memory charged to the host (anonymous + page cache it brought in), as the limit sees it."""
    return int((_group(MEMORY, name) / "memory.usage_in_bytes").read_text())


def memory_stat(name: str) -> dict[str, int]:
    """The host's ``memory.stat`` (bytes): ``rss`` is its anonymous memory, ``cache`` its page cache."""
    lines = (_group(MEMORY, name) / "memory.stat").read_text().splitlines()
    return {key: int(value) for key, value in (line.split() for line in lines)}


def _tree(name: str) -> list[Path]:
    """The host's cgroups in every hierarchy, deepest first.

    os.walk skips what vanishes mid-walk: the container's systemd adds and removes unit cgroups.
    """
    return [
        Path(directory)
        for hierarchy in _HIERARCHIES
        for directory, _subdirs, _files in os.walk(_group(hierarchy, name), topdown=False)
    ]


def pids(name: str) -> set[int]:
    """Every process in the host's cgroups, sub-cgroups included."""
    found: set[int] = set()
    for group in _tree(name):
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile
            found.update(int(pid) for pid in (group / "cgroup.procs").read_text().split())
    return found


def remove(name: str, timeout: float = 10.0) -> None:
    """Remove the (empty) cgroups; exiting processes may keep them busy a moment."""
    deadline = time.monotonic() + timeout
    for group in _tree(name):
        _rmdir(group, deadline)
    for hierarchy in _HIERARCHIES:
        with contextlib.suppress(OSError):  # other hosts still use it
            _parent(hierarchy).rmdir()


def _rmdir(directory: Path, deadline: float) -> None:
    while True:
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != errno.EBUSY or time.monotonic() > deadline:
                raise TestHostError(f"cannot remove cgroup {directory}: {error.strerror}") from error
            time.sleep(0.05)


def owned_names() -> set[str]:
    """Hosts of this state dir that have cgroups (crash leftovers show up here)."""
    names: set[str] = set()
    for hierarchy in _HIERARCHIES:
        parent = _parent(hierarchy)
        if parent.is_dir():
            names.update(p.name for p in parent.iterdir() if p.is_dir())
    return names
