"""What a host really is (RAM, CPUs, architecture, Debian release), read before planning it."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.facts.hardware import Cpus
from pyinfra.facts.server import Arch, LinuxDistribution

from commonstack.errors import CommonstackError
from commonstack.rendering import Release, versions
from commonstack.stacks.sizing import HostFacts

ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "armv6l": "armhf"}


class UsableMemoryMb(FactBase[int]):
    """RAM the host may use: MemTotal, or less when a cgroup caps it (containers, LXC VPSes)."""

    def command(self) -> str:
        return (
            "awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo; "
            "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || true"
        )

    def process(self, output) -> int:
        total, *limits = [line.strip() for line in output if line.strip()]
        capped = [int(limit) // (1024 * 1024) for limit in limits if limit.isdigit()]
        return min([int(total), *capped])


class UnsupportedRelease(CommonstackError):
    pass


def gather_release() -> Release:
    """The current host's facts, as rendering and sizing need them."""
    distribution = host.get_fact(LinuxDistribution)
    codename = (distribution.get("release_meta") or {}).get("VERSION_CODENAME", "")
    if distribution.get("name") != "Debian" or codename not in versions()["debian"]:
        supported = ", ".join(versions()["debian"])
        raise UnsupportedRelease(
            f"{host.name}: runs {distribution.get('name')} {codename or distribution.get('major')}; "
            f"commonstack supports Debian ({supported})"
        )
    machine = host.get_fact(Arch)
    facts = HostFacts(
        memory_mb=host.get_fact(UsableMemoryMb),
        cpus=host.get_fact(Cpus) or 1,
        arch=ARCHITECTURES.get(machine, machine),
    )
    return Release(facts=facts, codename=codename)
