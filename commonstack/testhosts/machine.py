"""Booting a host's rootfs with systemd-nspawn (systemd as PID 1), and ending it."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from . import cgroups, processes
from .errors import TestHostError
from .files import remove_tree
from .processes import Proc

NSPAWN_RUN = Path("/run/systemd/nspawn")

# Each host's systemd, journald, logind... hold inotify instances, all counted against root (no
# user namespaces); Linux's default of 128 ran out at about 15 hosts, and systemd then exits at
# boot ("Failed to allocate manager object: Too many open files").
INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
MIN_INOTIFY_INSTANCES = 1024
_ANSI = re.compile(r"\x1b\[[0-9;:]*[A-Za-z]")

# nspawn processes started by this Python process, so that we reap them (no zombies)
_children: dict[int, subprocess.Popen[bytes]] = {}

# Join the host's cgroups, then become nspawn: everything the container starts inherits them.
_JOIN_CGROUPS = 'for procs in $CGROUP_PROCS; do echo $$ > "$procs" || exit 1; done; exec "$@"'


def start(name: str, root: Path, console_log: Path, cgroup_procs: list[Path]) -> Proc:
    """Boot ``root`` detached (own session, so a Ctrl-C of the caller does not reach it)."""
    if int(INOTIFY_INSTANCES.read_text()) < MIN_INOTIFY_INSTANCES:
        INOTIFY_INSTANCES.write_text(f"{MIN_INOTIFY_INSTANCES}\n")
    command = [
        "systemd-nspawn", "--quiet", "-D", str(root), "-b",
        "--register=no",  # there is no systemd-machined on a machine not booted with systemd
        "--keep-unit",  # stay in the cgroups we made instead of asking systemd for a scope
        "--network-veth", "-M", name,
    ]  # fmt: skip
    console_log.parent.mkdir(parents=True, exist_ok=True)
    with console_log.open("wb") as log:
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
            raise TestHostError(f"test host {name} did not boot: {_tail(console_log)} (see {console_log})")
        time.sleep(0.02)
    return init


def boot_failure(nspawn: Proc, console_log: Path) -> str | None:
    """Why the host will never answer SSH, when that is clear already (instead of a long timeout)."""
    if not nspawn.alive():
        return f"it stopped while booting: {_tail(console_log)}"
    console = console_log.read_text(errors="replace")
    if "ssh.service: Start request repeated too quickly" not in console:
        return None
    if "Failed to spawn executor" in console:
        # Seen with trixie (systemd 257) on arm64 under Debian 12's qemu-user 7.2.
        return 'its systemd cannot start services under qemu-user emulation ("Failed to spawn executor")'
    return "systemd gave up starting sshd"


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


def _tail(path: Path, count: int = 3) -> str:
    """The last lines of the console, on one line."""
    try:
        text = _ANSI.sub("", path.read_text(errors="replace"))
    except FileNotFoundError:
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(lines[-count:]) or "no console output"
