"""Booting a host's rootfs with systemd-nspawn (systemd as PID 1), and ending it."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from . import cgroups, processes
from .errors import TestHostError
from .files import remove_tree
from .processes import Proc

NSPAWN_RUN = Path("/run/systemd/nspawn")

# nspawn processes started by this Python process, so that we reap them (no zombies)
_children: dict[int, subprocess.Popen[bytes]] = {}

# Join the host's cgroups, then become nspawn: everything the container starts inherits them.
_JOIN_CGROUPS = 'for procs in $CGROUP_PROCS; do echo $$ > "$procs" || exit 1; done; exec "$@"'


def start(name: str, root: Path, console_log: Path, cgroup_procs: list[Path]) -> Proc:
    """Boot ``root`` detached (own session, so a Ctrl-C of the caller does not reach it)."""
    command = [
        "systemd-nspawn", "--quiet", "-D", str(root), "-b",
        "--register=no",  # there is no systemd-machined on a machine not booted with systemd
        "--keep-unit",  # stay in the cgroups we made instead of asking systemd for a scope
        "--network-veth", "-M", name,
    ]  # fmt: skip
    with console_log.open("ab") as log:
        process = subprocess.Popen(
            ["sh", "-c", _JOIN_CGROUPS, "sh", *command],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "CGROUP_PROCS": " ".join(map(str, cgroup_procs))},
        )
    _children[process.pid] = process
    nspawn = Proc.of(process.pid)
    if nspawn is None:
        raise TestHostError(f"systemd-nspawn for test host {name} exited at once; see {console_log}")
    return nspawn


def wait_for_init(name: str, nspawn: Proc, console_log: Path, timeout: float) -> Proc:
    """The container's systemd, once nspawn has forked it."""
    deadline = time.monotonic() + timeout
    while (init := processes.container_init(nspawn)) is None:
        if not nspawn.alive() or time.monotonic() > deadline:
            raise TestHostError(f"test host {name} did not boot: {_last_line(console_log)} (see {console_log})")
        time.sleep(0.02)
    return init


def stop(name: str, nspawn: Proc | None, init: Proc | None, timeout: float = 15.0) -> None:
    """End every process of the host: its cgroups' members, its namespaces' members, nspawn.

    After a SIGKILL of nspawn the container's systemd lives on, reparented to PID 1; it is
    found through its namespaces and its cgroup. Killing it ends its whole PID namespace.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = cgroups.pids(name)
        if init is not None:
            found |= processes.namespace_members(init)
        if nspawn is not None and nspawn.alive():
            found.add(nspawn.pid)
        found = {pid for pid in found if processes.running(pid)}
        if not found:
            break
        if time.monotonic() > deadline:
            raise TestHostError(f"test host {name}: processes {sorted(found)} survived SIGKILL")
        processes.kill(found)
        processes.wait_gone(found, timeout=1.0)
    if nspawn is not None and (child := _children.pop(nspawn.pid, None)) is not None:
        child.wait()  # reap our own child; one reparented to PID 1 is PID 1's to reap


def remove_runtime_files(name: str, root: Path) -> None:
    """nspawn's own files in /run, which it leaves behind when it is killed: its mount
    propagation folder and its image lock (named after the rootfs folder's device and inode)."""
    remove_tree(NSPAWN_RUN / "propagate" / name)
    try:
        image = root.stat()
    except FileNotFoundError:
        return
    (NSPAWN_RUN / "locks" / f"inode-{image.st_dev}:{image.st_ino}").unlink(missing_ok=True)


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return "no console output"
    return lines[-1] if lines else "no console output"
