"""What a host really is (RAM, CPUs, architecture, Debian release), read before planning it."""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from pyinfra import host
from pyinfra.api import FactBase

from commonstack.inventories.groups import Group
from commonstack.plan import HostPlan, Release, judged, plan_measured
from commonstack.stacks.host_report import REPORT_COMMAND, HostReport, read_report
from commonstack.stacks.model import StackProfile


class HostRelease(FactBase[HostReport | None]):
    """What the host is: its Debian release, architecture, usable RAM and CPUs (plan.py reads and
    judges it; `commonstack check` runs the same command over its own connection)."""

    def command(self) -> str:
        return REPORT_COMMAND

    def default(self) -> HostReport | None:
        return None

    def process(self, output) -> HostReport:
        return read_report(output)


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


def gather_release() -> Release:
    """The current host's facts, as rendering and sizing need them."""
    return judged(host.get_fact(HostRelease) or HostReport(), host.name)


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
    return plan_measured(group, profile, host.name, secrets, gather_release())
