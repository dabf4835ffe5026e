"""What a host is (commonstack/stacks/host_report.py; plan.judged): read from one command's answer, and judged."""

from __future__ import annotations

import os
import subprocess

import pytest

from commonstack.plan import UnsupportedRelease, judged
from commonstack.stacks.host_report import REPORT_COMMAND, HostReport, read_report
from commonstack.stacks.sizing import HostFacts

BOOKWORM = {"ID": "debian", "VERSION_CODENAME": "bookworm", "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)"}


def test_a_debian_release_the_kit_supports_is_sized_as_read():
    release = judged(HostReport(machine="aarch64", cpus=4, memory_mb=3796, os=BOOKWORM), "pi")
    assert (release.codename, release.facts.arch, release.facts.cpus, release.facts.memory_mb) == ("bookworm", "arm64", 4, 3796)
    assert judged(HostReport(machine="x86_64", cpus=None, memory_mb=512, os=BOOKWORM), "vps").facts.cpus == 1  # unknown: one


@pytest.mark.parametrize(
    ("system", "says"),
    [
        ({"ID": "ubuntu", "ID_LIKE": "debian", "VERSION_CODENAME": "noble", "PRETTY_NAME": "Ubuntu 24.04.1 LTS"}, "runs Ubuntu 24.04.1 LTS"),
        ({"ID": "debian", "VERSION_CODENAME": "bullseye", "PRETTY_NAME": "Debian GNU/Linux 11 (bullseye)"}, "runs Debian GNU/Linux 11"),
        ({"ID": "raspbian", "VERSION_CODENAME": "bookworm", "NAME": "Raspbian GNU/Linux"}, "runs Raspbian GNU/Linux"),
        ({}, "runs a system without /etc/os-release"),
    ],
)
def test_another_system_or_release_is_refused_saying_what_it_runs(system, says):
    with pytest.raises(UnsupportedRelease) as refused:
        judged(HostReport(machine="x86_64", cpus=2, memory_mb=2048, os=system), "vps")
    assert str(refused.value).startswith(f"vps: {says}") and "commonstack supports Debian (bookworm, trixie)" in str(refused.value)


def test_this_machine_reads_as_it_is():
    report = read_report(subprocess.run(["sh", "-c", REPORT_COMMAND], capture_output=True, text=True, check=True).stdout.splitlines())
    assert report.machine == os.uname().machine
    assert report.cpus == os.cpu_count()
    with open("/proc/meminfo") as meminfo:
        total = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1]) // 1024
    assert 0 < report.memory_mb <= total
    with open("/etc/os-release") as os_release:
        assert f"ID={report.os['ID']}" in os_release.read().replace('"', "")


class AnsweredRun:
    """A stand-in for a started check run (checks/runner.py CheckRun): its hosts' answers, given."""

    def __init__(self, reports: dict[str, list[str]], refused: dict[str, str] | None = None):
        self._reports, self._refused = reports, refused or {}

    def reports(self) -> dict[str, list[str]]:
        return self._reports

    def unreachable(self) -> dict[str, str]:
        return dict(self._refused)


def chat_group(tmp_path):
    from click.testing import CliRunner

    from commonstack.cli import main
    from commonstack.inventories.groups import Group
    from commonstack.inventories.secrets import current_secrets

    inventories = tmp_path / "inv"
    made = CliRunner().invoke(main, ["--inventories", str(inventories), "init", "coop", "--preset", "chat",
                                     "--domain", "coop.example.org", "--host", "root@203.0.113.7"])  # fmt: skip
    assert made.exit_code == 0, made.output
    group = Group("coop", inventories)
    profile = group.load()
    return group, profile, current_secrets(group.secrets_file, profile)


def test_the_checks_size_each_host_from_what_it_said_and_name_those_they_cannot_plan(tmp_path):
    from commonstack.checks.group import sized_plans

    group, profile, secrets = chat_group(tmp_path)
    name = profile.hosts[0].name
    debian = ["machine=aarch64", "cpus=4", "os_ID=debian", "os_VERSION_CODENAME=bookworm"]

    plans, unusable = sized_plans(group, profile, secrets, AnsweredRun({name: [*debian, "memory_mb=3796"]}))
    assert not unusable and plans[name].release.facts == HostFacts(memory_mb=3796, cpus=4, arch="arm64")
    plans, unusable = sized_plans(group, profile, secrets, AnsweredRun({name: ["os_ID=ubuntu", 'os_PRETTY_NAME="Ubuntu 24.04 LTS"']}))
    assert not plans and unusable[name].startswith(f"{name}: runs Ubuntu 24.04 LTS; commonstack supports Debian")
    plans, unusable = sized_plans(group, profile, secrets, AnsweredRun({name: [*debian, "memory_mb=200"]}))
    assert not plans and "need at least" in unusable[name], unusable  # too small for its services: the profile's error
    plans, unusable = sized_plans(group, profile, secrets, AnsweredRun({}, {name: "no answer: is the host up?"}))
    assert not plans and unusable == {name: "no answer: is the host up?"}  # not reached: said so, not dropped
