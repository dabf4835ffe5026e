"""Finding and ending a test host's processes.

A PID alone is not an identity (PIDs are reused), so a process is recorded as PID + start
time. A host's processes are found three ways: its cgroups (see ``cgroups``), and the PID and
network namespaces of its init (the container's systemd), which outlives a SIGKILLed nspawn.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int  # clock ticks after boot, field 22 of /proc/PID/stat

    @classmethod
    def of(cls, pid: int) -> Proc | None:
        stat = _stat(pid)
        return cls(pid, int(stat[19])) if stat is not None else None

    def alive(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and stat[0] != "Z" and int(stat[19]) == self.start


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2 :].split()


def container_init(nspawn: Proc) -> Proc | None:
    """The container's PID 1: the child of nspawn that is PID 1 in its own PID namespace."""
    for task in Path(f"/proc/{nspawn.pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:
            continue
        for child in map(int, children):
            if _ns_pids(child)[-1:] == [1]:
                return Proc.of(child)
    return None


def _ns_pids(pid: int) -> list[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return [int(p) for p in line.split()[1:]]
    except FileNotFoundError:
        pass
    return []


def namespace_members(init: Proc) -> set[int]:
    """Every process sharing the PID or network namespace of a live container init."""
    wanted = {_ns(init.pid, kind) for kind in ("pid", "net")} - {None}
    # Checked after reading: a dead init's namespace inode numbers may belong to someone else now.
    if not init.alive():
        return set()
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and not wanted.isdisjoint({_ns(int(entry.name), "pid"), _ns(int(entry.name), "net")}):
            members.add(int(entry.name))
    return members


def _ns(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def kill(pids: set[int]) -> None:
    """SIGKILL: a throwaway host has nothing worth a graceful shutdown, which is slow under emulation."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # gone meanwhile
            os.kill(pid, signal.SIGKILL)


def wait_gone(pids: set[int], timeout: float) -> None:
    """Wait until none of ``pids`` runs (zombies count as gone), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def running(pid: int) -> bool:
    """Exists and is not a zombie (a zombie holds no resources; its parent may never reap it)."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"
