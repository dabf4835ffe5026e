"""Health checks of the hardened base: firewall, sshd, updates, swap, admin user."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import pytest


def _accepts(address: str, port: int, timeout: float = 1.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def test_firewall_is_active_and_denies_by_default(host):
    assert host.service("nftables").is_enabled, "nftables is not enabled: run `commonstack deploy`"
    ruleset = host.check_output("nft list chain inet commonstack input")
    assert "policy drop" in ruleset, "the inbound firewall does not drop by default: is /etc/nftables.conf ours?"


def test_undeclared_ports_are_closed_from_outside(stack):
    """Probed from this machine: databases, caches and app servers must not be reachable."""
    ports = stack["never_public"]
    with ThreadPoolExecutor(len(ports)) as pool:
        open_ports = [p for p, ok in zip(ports, pool.map(lambda p: _accepts(stack["address"], p), ports)) if ok]
    assert not open_ports, f"ports {open_ports} answer from outside: check /etc/nftables.conf on the host"


def test_ssh_port_is_open_from_outside(stack):
    ssh = next(p for p in stack["firewall_ports"] if p["why"] == "SSH")
    assert _accepts(stack["address"], int(ssh["port"])), "SSH does not answer: is the host up?"


def test_sshd_refuses_passwords(host):
    settings = dict(line.split(" ", 1) for line in host.check_output("sshd -T").splitlines() if " " in line)
    assert settings.get("passwordauthentication") == "no", "sshd accepts passwords: check /etc/ssh/sshd_config.d/"
    assert settings.get("kbdinteractiveauthentication") == "no"
    assert settings.get("permitrootlogin") in ("without-password", "prohibit-password", "no")


def test_unattended_upgrades_are_enabled(host):
    assert host.package("unattended-upgrades").is_installed
    periodic = host.check_output("apt-config dump APT::Periodic::Unattended-Upgrade")
    assert '"1"' in periodic, "APT::Periodic::Unattended-Upgrade is not 1: security updates are not automatic"


def test_swap_file_is_in_place(host, stack):
    if not stack["swap_mb"]:
        pytest.skip("sizing asks for no swap on this host")
    swapfile = host.file("/swapfile")
    assert swapfile.exists and swapfile.mode == 0o600
    assert swapfile.size == stack["swap_mb"] * 1024 * 1024
    if host.run("systemd-detect-virt --container").rc == 0:
        pytest.skip("a container cannot enable swap (the file is ready for a real host)")
    assert "/swapfile" in host.file("/proc/swaps").content_string, "the swap file is not active: `swapon /swapfile`"


def test_admin_user_can_sudo(host, stack):
    admin = host.user(stack["admin_user"])
    assert admin.exists and "sudo" in admin.groups
