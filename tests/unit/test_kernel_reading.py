"""Reading kernel settings (stacks/kernel.py `read_command`, `parse`) from this machine's own
/proc/sys: what `sysctl -n` says, several values included, a write-only and a missing key."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from commonstack.stacks.kernel import KernelValue, parse, read_command

pytestmark = pytest.mark.skipif(not shutil.which("sysctl"), reason="needs sysctl (procps)")


def sysctl(key: str) -> str:
    return " ".join(subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, check=True).stdout.split("\t")).strip()


def test_the_settings_read_are_what_sysctl_says():
    keys = ["net.ipv4.ip_local_port_range", "kernel.pid_max", "net.ipv4.conf.*.forwarding", "no.such.key"]
    found = parse(subprocess.run(["sh", "-c", read_command(keys)], capture_output=True, text=True, check=True).stdout.splitlines())
    assert found["net.ipv4.ip_local_port_range"].value == sysctl("net.ipv4.ip_local_port_range")
    assert " " in found["net.ipv4.ip_local_port_range"].value  # two values, one space between
    assert found["kernel.pid_max"].value == sysctl("kernel.pid_max")
    assert found["net.ipv4.conf.lo.forwarding"].value == sysctl("net.ipv4.conf.lo.forwarding")
    assert not any(key.startswith("no.") for key in found)


def test_a_setting_that_cannot_be_read_has_no_value_and_the_others_are_still_read():
    keys = ["net.ipv4.route.flush", "kernel.pid_max"]  # route.flush is write-only
    found = parse(subprocess.run(["sh", "-c", read_command(keys)], capture_output=True, text=True, check=True).stdout.splitlines())
    assert found["net.ipv4.route.flush"].value == ""
    assert found["kernel.pid_max"] == KernelValue(sysctl("kernel.pid_max"), found["kernel.pid_max"].writable)
