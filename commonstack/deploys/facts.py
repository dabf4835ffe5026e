"""What a host really is (RAM, CPUs, architecture, Debian release), read before planning it."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import replace

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.facts.hardware import Cpus
from pyinfra.facts.server import Arch, LinuxDistribution

from commonstack.errors import CommonstackError
from commonstack.inventories.groups import Group
from commonstack.plan import HostPlan, Release, plan_one
from commonstack.stacks.model import StackProfile
from commonstack.stacks.sizing import HostFacts, debian_arch
from commonstack.stacks.versions import versions


class UsableMemoryMb(FactBase[int | None]):
    """RAM the host may use: MemTotal, or less when a cgroup caps it (containers, LXC VPSes).
    None when /proc/meminfo says nothing (HostFacts then refuses it)."""

    def command(self) -> str:
        return (
            "awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo; "
            "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || true"
        )

    def process(self, output) -> int:
        total, *limits = [line.strip() for line in output if line.strip()]
        capped = [int(limit) // (1024 * 1024) for limit in limits if limit.isdigit()]
        return min([int(total), *capped])


class FileNames(FactBase[list[str]]):
    """The names of the files in a folder ([] when there is no such folder)."""

    def command(self, path: str) -> str:
        return f"ls -1A {shlex.quote(path)} 2>/dev/null || true"

    def default(self) -> list[str]:
        return []

    def process(self, output) -> list[str]:
        return [line.strip() for line in output if line.strip()]


class InContainer(FactBase[bool]):
    """Whether the host is a container (a test host, an LXC VPS): no swap, no clock of its own."""

    def command(self) -> str:
        return "systemd-detect-virt --container || true"

    def default(self) -> bool:
        return False

    def process(self, output) -> bool:
        return bool(output) and output[0].strip() not in ("", "none")


class UnsupportedRelease(CommonstackError):
    pass


def gather_release() -> Release:
    """The current host's facts, as rendering and sizing need them."""
    # Every fact is asked before any is judged, so the runner reads them in one batch (prefetch.py).
    distribution = host.get_fact(LinuxDistribution)
    machine, memory_mb, cpus = host.get_fact(Arch), host.get_fact(UsableMemoryMb), host.get_fact(Cpus)
    codename = (distribution.get("release_meta") or {}).get("VERSION_CODENAME", "")
    if distribution.get("name") != "Debian" or codename not in versions().debian:
        supported = ", ".join(versions().debian)
        raise UnsupportedRelease(
            f"{host.name}: runs {distribution.get('name')} {codename or distribution.get('major')}; "
            f"commonstack supports Debian ({supported})"
        )
    facts = HostFacts(memory_mb=memory_mb, cpus=cpus or 1, arch=debian_arch(machine))
    return Release(facts=facts, codename=codename)


class DownloadProblem(FactBase[str]):
    """'' when the host gets an answer for URL (HTTP HEAD), else the reason it does not: whether it can
    download a release (Nextcloud's tarball) or reach a store (Nextcloud's app store) before any change."""

    read_ahead = False  # up to 30 s when unreachable: asked only when needed (deploys/prefetch.py)

    def command(self, url: str) -> str:
        quoted = shlex.quote(url)
        probe = (
            "import sys, urllib.request; "
            "urllib.request.urlopen(urllib.request.Request(sys.argv[1], method='HEAD'), timeout=30)"
        )
        return (
            "if command -v curl >/dev/null 2>&1; then "
            f"curl -fsSI --connect-timeout 10 --max-time 30 -o /dev/null {quoted} 2>&1 || echo failed; "
            "elif command -v python3 >/dev/null 2>&1; then "
            f"python3 -c {shlex.quote(probe)} {quoted} 2>&1 | tail -n 1; "
            "fi; true"
        )

    def default(self) -> str:
        return ""  # an answer: curl -s prints nothing then

    def process(self, output) -> str:
        lines = [line.strip() for line in output if line.strip() and line.strip() != "failed"]
        if not lines and any(line.strip() == "failed" for line in output):
            return "no answer"
        return " ".join(lines)


def planned_here(group: Group, profile: StackProfile, secrets: Mapping[str, str]) -> HostPlan:
    """The current host's plan, from its facts (read-only)."""
    wanted = next(h for h in profile.hosts if h.name == host.name)
    release = gather_release()
    if wanted.memory_mb and wanted.memory_mb < release.facts.memory_mb:
        # The profile may reserve RAM for other uses: size for its figure, not the machine's.
        release = replace(release, facts=replace(release.facts, memory_mb=wanted.memory_mb))
    return plan_one(group, profile, wanted, secrets, release)
