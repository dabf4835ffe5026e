"""What a host is, read with one command: by a deploy as a pyinfra fact (deploys/facts.py), and by
`commonstack check` as the first command of its SSH connection, before the deploy code or the plan
is imported (checks/runner.py); plan.judged says whether the kit can plan it."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

# One "key=value" line each, then /etc/os-release with "os_" before each line. The RAM the host
# may use is MemTotal, or less when a cgroup caps it (containers, LXC VPSes).
REPORT_COMMAND = (
    'echo "machine=$(uname -m)"; '
    'echo "cpus=$(getconf NPROCESSORS_ONLN 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null)"; '
    "echo \"memory_mb=$(awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo)\"; "
    "for f in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do "
    '[ -r "$f" ] && echo "memory_cap=$(cat "$f")"; done; '
    "sed 's/^/os_/' /etc/os-release 2>/dev/null; true"
)


@dataclass(frozen=True)
class HostReport:
    """REPORT_COMMAND's answer, read."""

    machine: str = ""
    cpus: int | None = None
    memory_mb: int | None = None  # what the host may use; None when /proc/meminfo said nothing
    os: dict[str, str] = field(default_factory=dict)  # /etc/os-release


def read_report(lines: Iterable[str]) -> HostReport:
    """REPORT_COMMAND's output lines -> HostReport."""
    values: dict[str, str] = {}
    caps: list[int] = []
    os_release: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.strip().partition("=")
        if not sep:
            continue
        if key.startswith("os_"):
            try:
                os_release[key[3:]] = " ".join(shlex.split(value))  # os-release quotes as a shell does
            except ValueError:
                os_release[key[3:]] = value
        elif key == "memory_cap":
            caps += [int(value) // (1024 * 1024)] if value.isdigit() else []  # "max": no cap
        else:
            values[key] = value.strip()
    total = int(values["memory_mb"]) if values.get("memory_mb", "").isdigit() else None
    cpus = values.get("cpus", "")
    return HostReport(
        machine=values.get("machine", ""),
        cpus=int(cpus) if cpus.isdigit() else None,
        memory_mb=min([total, *caps]) if total is not None else None,
        os=os_release,
    )
