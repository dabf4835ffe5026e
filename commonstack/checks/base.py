"""Health checks of the hardened base: firewall (probed from outside too), sshd, updates, swap,
admin user. The machine's own health (disk, memory, units, clock) is host.py's."""

from __future__ import annotations

import pytest

from commonstack.checks.probes import accepts, answering, declared_tcp_ports, public_tcp_listeners


def test_firewall_is_active_and_denies_by_default(host):
    assert host.service("nftables").is_enabled, "nftables is not enabled: run `commonstack deploy`"
    ruleset = host.check_output("nft list chain inet commonstack input")
    assert "policy drop" in ruleset, "the inbound firewall does not drop by default: is /etc/nftables.conf ours?"


def test_database_and_admin_ports_are_closed_from_outside(stack):
    """Probed from this machine: databases, caches and app servers must not be reachable."""
    open_ports = answering(stack["address"], stack["never_public"])
    assert not open_ports, f"ports {open_ports} answer from outside: check /etc/nftables.conf on the host"


def test_ssh_port_is_open_from_outside(stack):
    ssh = next(p for p in stack["firewall_ports"] if p["why"] == "SSH")
    assert accepts(stack["address"], int(ssh["port"])), "SSH does not answer: is the host up?"


def test_sshd_refuses_passwords(host):
    settings = dict(line.split(" ", 1) for line in host.check_output("sshd -T").splitlines() if " " in line)
    assert settings.get("passwordauthentication") == "no", "sshd accepts passwords: check /etc/ssh/sshd_config.d/"
    assert settings.get("kbdinteractiveauthentication") == "no"
    assert settings.get("permitrootlogin") in ("without-password", "prohibit-password", "no")


def test_unattended_upgrades_are_enabled(host):
    assert host.package("unattended-upgrades").is_installed
    periodic = host.check_output("apt-config dump APT::Periodic::Unattended-Upgrade")
    assert '"1"' in periodic, "APT::Periodic::Unattended-Upgrade is not 1: security updates are not automatic"


def test_swap_file_is_in_place(host, stack, in_container):
    if not stack["swap_mb"]:
        pytest.skip("sizing asks for no swap on this host")
    swapfile = host.file("/swapfile")
    assert swapfile.exists and swapfile.mode == 0o600
    assert swapfile.size == stack["swap_mb"] * 1024 * 1024
    if in_container:
        pytest.skip("a container cannot enable swap (the file is ready for a real host)")
    assert "/swapfile" in host.file("/proc/swaps").content_string, "the swap file is not active: `swapon /swapfile`"


def test_admin_user_can_sudo(host, stack):
    admin = host.user(stack["admin_user"])
    assert admin.exists and "sudo" in admin.groups


def test_no_undeclared_port_answers_from_outside(host, stack):
    """What listens on a public address, on a port no service of the host declares, must not answer."""
    declared = declared_tcp_ports(stack["firewall_ports"])
    listening = public_tcp_listeners(host.check_output("ss -Htlnp"))
    # The ports that must never be public are probed by the check above.
    candidates = sorted(p for p in listening if p not in declared and p not in stack["never_public"])
    stray = answering(stack["address"], candidates)
    assert not stray, "; ".join(
        f"port {p} ({listening[p] or 'a program'}) answers from outside, but no service of this host needs it: "
        "stop that program, or remove the rule that opens it from the firewall (`sudo nft list ruleset`)"
        for p in stray
    )
