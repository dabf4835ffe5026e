"""Local test hosts: created, reused, destroyed, cleaned after a crash, many at once, arm64, limited.

Every host is a real booted Debian (systemd-nspawn) reached over real SSH with a pinned host key.
"""

from __future__ import annotations

import ipaddress
import os
import platform
import signal
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from commonstack import testhosts
from commonstack.testhosts import TestHost, TestHostError, cgroups, machine, network, paths, processes, state
from commonstack.testhosts.commands import run
from commonstack.testhosts.processes import Proc

pytestmark = pytest.mark.integration

TEST_NET = ipaddress.ip_network("10.231.0.0/16")

Factory = Callable[..., TestHost]  # testhost_factory
SSH = Callable[..., subprocess.CompletedProcess[str]]  # testhost_ssh


def footprint(name: str) -> tuple[set[Proc], Path]:
    """The host's processes (its cgroups plus its init's namespaces) and nspawn's image lock file."""
    record = state.load(name)
    assert record is not None and record.init is not None
    pids = cgroups.pids(name) | processes.namespace_members(record.init)
    image = (paths.host_dir(name) / "rootfs").stat()
    image_lock = machine.NSPAWN_RUN / "locks" / f"inode-{image.st_dev}:{image.st_ino}"
    assert image_lock.exists()
    return {proc for pid in pids if (proc := Proc.of(pid)) is not None}, image_lock


def leftovers(name: str, address: str, procs: set[Proc], image_lock: Path) -> list[str]:
    """Whatever of the host still exists anywhere on the machine."""
    found = [f"process {p.pid}" for p in procs if p.alive()]
    if image_lock.exists() or (machine.NSPAWN_RUN / "propagate" / name).exists():
        found.append("nspawn runtime files")
    if Path(f"/sys/class/net/ve-{name}").exists():
        found.append(f"interface ve-{name}")
    subnet = str(ipaddress.ip_network(f"{address}/24", strict=False))
    if name in network.nat_owned_names() or subnet in run(["nft", "list", "ruleset"]):
        found.append("nft rules")
    if name in cgroups.owned_names():
        found.append("cgroups")
    for path in (paths.host_dir(name), paths.console_log(name)):
        if path.exists():
            found.append(f"file {path}")
    if str(paths.host_dir(name)) in Path("/proc/self/mountinfo").read_text():
        found.append("mounts")
    return found


def test_a_host_boots_systemd_and_answers_ssh(testhost: TestHost, testhost_ssh: SSH) -> None:
    assert ipaddress.ip_address(testhost.address) in TEST_NET
    result = testhost_ssh(testhost, "hostname; cat /proc/1/comm; systemctl is-system-running --wait; id -un")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [testhost.name, "systemd", "running", "root"]


def test_a_host_reaches_the_package_mirror(testhost: TestHost, testhost_ssh: SSH) -> None:
    result = testhost_ssh(testhost, "apt-get update -qq && apt-cache policy sudo | grep -c http")
    assert result.returncode == 0, result.stderr


def test_ssh_accepts_only_the_key(testhost: TestHost, testhost_ssh: SSH) -> None:
    result = testhost_ssh(testhost, "sshd -T | grep -E '^(passwordauthentication|permitrootlogin) '")
    assert sorted(result.stdout.split("\n")[:2]) == ["passwordauthentication no", "permitrootlogin without-password"]


def test_up_again_returns_the_same_host(testhost: TestHost) -> None:
    record = state.load(testhost.name)
    again = testhosts.up(testhost.name)
    assert again == testhost
    assert state.load(testhost.name) == record  # same processes: nothing was restarted
    with pytest.raises(TestHostError, match="run down first"):
        testhosts.up(testhost.name, memory="1G")


def test_down_leaves_nothing(testhost_factory: Factory) -> None:
    host = testhost_factory()
    procs, image_lock = footprint(host.name)
    assert len(procs) >= 4  # nspawn, systemd, journald, sshd at least

    assert testhosts.down(host.name) is True

    assert leftovers(host.name, host.address, procs, image_lock) == []
    assert host.name not in [h.name for h in testhosts.list_hosts()]
    assert testhosts.down(host.name) is False


def test_cleanup_after_nspawn_is_killed(testhost_factory: Factory) -> None:
    host = testhost_factory()
    procs, image_lock = footprint(host.name)
    record = state.load(host.name)
    assert record is not None and record.nspawn is not None and record.init is not None

    os.kill(record.nspawn.pid, signal.SIGKILL)
    processes.wait_gone({record.nspawn.pid}, timeout=5)
    assert record.init.alive()  # the container's systemd survives, reparented: the case to clean
    assert [h.status for h in testhosts.list_hosts() if h.name == host.name] == ["stale"]

    assert testhosts.cleanup_stale() == [host.name]

    assert leftovers(host.name, host.address, procs, image_lock) == []


def test_up_replaces_a_crashed_host(testhost_factory: Factory, testhost_ssh: SSH) -> None:
    host = testhost_factory()
    record = state.load(host.name)
    assert record is not None and record.nspawn is not None
    os.kill(record.nspawn.pid, signal.SIGKILL)
    processes.wait_gone({record.nspawn.pid}, timeout=5)

    again = testhosts.up(host.name)

    assert again.host_key != host.host_key  # a new machine, not the crashed one
    assert testhost_ssh(again, "true").returncode == 0


def test_eight_hosts_at_once(testhost_factory: Factory, testhost_ssh: SSH) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        hosts = list(pool.map(lambda _: testhost_factory(), range(8)))
        results = list(pool.map(lambda h: testhost_ssh(h, "hostname; ip -4 -o addr show host0"), hosts))

    assert len({h.address for h in hosts}) == 8
    for host, result in zip(hosts, results, strict=True):
        assert result.returncode == 0, result.stderr
        name, addr_line = result.stdout.splitlines()
        assert name == host.name
        assert f"inet {host.address}/24" in addr_line


def test_arm64_host(testhost_factory: Factory, testhost_ssh: SSH) -> None:
    host = testhost_factory(arch="arm64")
    result = testhost_ssh(host, "uname -m; dpkg --print-architecture; systemctl is-system-running --wait")
    assert result.returncode == 0, result.stderr
    # "running": no unit failed, thanks to the emulation drop-in (user namespaces, credentials)
    assert result.stdout.split() == ["aarch64", "arm64", "running"]


def test_trixie_host(testhost_factory: Factory, testhost_ssh: SSH) -> None:
    host = testhost_factory(suite="trixie")
    result = testhost_ssh(host, ". /etc/os-release; echo $VERSION_CODENAME; systemctl is-system-running --wait")
    assert result.stdout.split() == ["trixie", "running"], result.stderr


def test_memory_limit(testhost_factory: Factory, testhost_ssh: SSH) -> None:
    host = testhost_factory(memory="512M")
    assert host.memory_mb == 512
    assert int(cgroups.memory_limit_file(host.name).read_text()) == 512 * 1024 * 1024
    record = state.load(host.name)
    assert record is not None and record.init is not None
    assert record.init.pid in cgroups.pids(host.name)

    allocate = "python3 -c 'bytearray({} * 1024 * 1024)'; echo exit=$?"
    assert testhost_ssh(host, allocate.format(128)).stdout == "exit=0\n"
    assert testhost_ssh(host, allocate.format(768)).stdout == "exit=137\n"  # SIGKILL by the OOM killer


def test_controller_ca_is_trusted_when_asked(testhost_factory: Factory, testhost_ssh: SSH) -> None:
    host = testhost_factory(trust_controller_ca=True)
    fetch = (
        'python3 -c "import ssl, urllib.request; '
        "ctx = ssl.create_default_context(cafile='/etc/ssl/certs/ca-certificates.crt'); "
        "print(urllib.request.urlopen('https://pypi.org/simple/pip/', context=ctx, timeout=60).status)\""
    )
    result = testhost_ssh(host, fetch)
    assert result.stdout.strip() == "200", result.stderr


@pytest.mark.parametrize("name", ["Web_1", "a-very-long-name", "web-", ""])
def test_invalid_names_are_refused_clearly(name: str) -> None:
    with pytest.raises(TestHostError, match="'ve-NAME', at most 15 characters"):
        testhosts.up(name)


@pytest.mark.skipif(platform.system() != "Linux", reason="elsewhere the first refusal is 'need Linux'")
def test_not_root_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(TestHostError, match="need root"):
        testhosts.up("web")
