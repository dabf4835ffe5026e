"""Kernel settings (sysctl) on a host: how the deploy and the checks read and compare them.

A key may name every network interface at once ("net.ipv4.conf.*.send_redirects"), as
systemd-sysctl reads it. In a container some keys are read-only (the host kernel's, shared with
every container) or absent (global network keys exist only in the host's own network namespace).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# What a key of the kit looks like (the registry's, not a user's): no shell quoting needed.
KEY = re.compile(r"[a-z0-9_]+(\.([a-z0-9_]+|\*))+")


@dataclass(frozen=True)
class KernelValue:
    value: str
    writable: bool


def sysctl_path(key: str) -> str:
    """/proc/sys path (a shell glob where the key has "*") of a sysctl key."""
    if not KEY.fullmatch(key):
        raise ValueError(f"not a sysctl key: {key!r}")
    return "/proc/sys/" + key.replace(".", "/")


def sysctl_key(path: str) -> str:
    """The key of a /proc/sys path; a dot in an interface's name (eth0.100, a VLAN) becomes "/"."""
    return ".".join(part.replace(".", "/") for part in path.removeprefix("/proc/sys/").split("/"))


def read_command(keys: Iterable[str]) -> str:
    """A shell command printing "PATH rw|ro" for every file the keys name (globs expanded), then
    "PATH:VALUE" for each readable one: one `grep` reads them all (not a process per file), and
    goes on past a file it cannot read (an interface gone meanwhile)."""
    paths = " ".join(sysctl_path(key) for key in keys)
    return (
        f"set --; for p in {paths}; do [ -f \"$p\" ] || continue; "
        "if [ -w \"$p\" ]; then echo \"$p rw\"; else echo \"$p ro\"; fi; [ -r \"$p\" ] && set -- \"$@\" \"$p\"; done; "
        "[ $# -eq 0 ] || grep -H '' -- \"$@\" 2>/dev/null || true"
    )


def parse(lines: Iterable[str]) -> dict[str, KernelValue]:
    """read_command's output -> {key: KernelValue}; keys the kernel does not have are absent."""
    writable: dict[str, bool] = {}
    values: dict[str, str] = {}
    for line in lines:
        path, _, mode = line.strip().partition(" ")
        if mode in ("rw", "ro") and ":" not in path:
            writable[path] = mode == "rw"
            continue
        path, found, value = line.partition(":")  # no path of /proc/sys holds ":" (nor an interface)
        if found and path not in values:  # a file of several lines: its first
            # Several values are tab-separated in /proc/sys: one space between them here.
            values[path] = value.replace("\t", " ").strip()
    return {sysctl_key(path): KernelValue(values.get(path, ""), rw) for path, rw in writable.items()}


def matching(key: str, current: dict[str, KernelValue]) -> list[str]:
    """The keys of `current` that `key` names ("*" stands for one part: an interface)."""
    wanted = key.split(".")
    return sorted(
        name
        for name in current
        if len(parts := name.split(".")) == len(wanted) and all(w in ("*", p) for w, p in zip(wanted, parts))
    )


def differences(settings: dict[str, str], current: dict[str, KernelValue]) -> tuple[list[str], list[str]]:
    """("KEY=VALUE" to set, read-only "KEY=VALUE" that differ) for the wanted {key or glob: value}."""
    to_set, read_only = [], []
    for key, value in settings.items():
        for name in matching(key, current):
            if current[name].value.split() != value.split():
                (to_set if current[name].writable else read_only).append(f"{name}={value}")
    return to_set, read_only
