"""Health checks of the hardened base: firewall (probed from outside too), sshd, security updates
(automatic, installed, in effect), swap, admin user, fail2ban, kernel settings, secrets kept
private. The machine's own health (disk, memory, units, clock) is host.py's."""

from __future__ import annotations

import datetime
import re

import pytest

from commonstack.checks import ahead
from commonstack.checks.expect import JAILS, assert_jails_active
from commonstack.checks.exposed_secrets import parse as parse_scan
from commonstack.checks.exposed_secrets import scan_command
from commonstack.checks.host_state import file_states, listeners, public_tcp_listeners, sshd_settings
from commonstack.checks.probes import answering, declared_tcp_ports, silent
from commonstack.stacks.kernel import differences, matching
from commonstack.stacks.kernel import parse as parse_kernel
from commonstack.stacks.kernel import read_command as read_kernel
from commonstack.stacks.updates import PENDING_COMMAND, pending_security_updates

# apt's records of its last successful package list refresh (apt's own 15update-stamp hook) and
# of the last unattended-upgrades run (apt.systemd.daily).
LISTS_STAMP = "/var/lib/apt/periodic/update-success-stamp"
UPGRADE_STAMP = "/var/lib/apt/periodic/unattended-upgrades-stamp"
# Network protocols the kernel must not load on demand (base's modprobe.d file).
UNUSED_PROTOCOLS = ("dccp", "sctp", "rds", "tipc")
# The services needrestart never restarts on its own (its needrestart.conf, override_rc, as Debian
# ships it; those a server of the kit can run): a reboot updates them.
NEEDRESTART_DEFERS = re.compile(
    r"^(dbus|network|NetworkManager|wpa_supplicant|docker|systemd-logind|getty@|serial-getty@|user@\d+\.service|cron-"
    r"|(unattended-upgrades|apt-daily|apt-daily-upgrade)\.service$)"
)


NEEDRESTART = "needrestart -b -r l"


def slowest_commands(stack: dict) -> list[tuple[str, ...]]:
    """Started at the host's first check (ahead.py)."""
    return [(PENDING_COMMAND,), (NEEDRESTART,), scan_command(stack["secret_digests"]), (read_kernel(stack["sysctl"]),), (JAILS,)]


def test_firewall_is_active_and_denies_by_default(host):
    assert host.service("nftables").is_enabled, "nftables is not enabled: run `commonstack deploy`"
    ruleset = host.check_output("nft list chain inet commonstack input")
    assert "policy drop" in ruleset, "the inbound firewall does not drop by default: is /etc/nftables.conf ours?"


def test_ssh_port_is_open_from_outside(stack):
    ssh = next(p for p in stack["firewall_ports"] if p["why"] == "SSH")
    assert not silent(stack["address"], [int(ssh["port"])]), "SSH does not answer: is the host up?"


def test_sshd_refuses_passwords(host):
    settings = sshd_settings(host)
    assert settings.get("passwordauthentication") == "no", "sshd accepts passwords: check /etc/ssh/sshd_config.d/"
    assert settings.get("kbdinteractiveauthentication") == "no"
    assert settings.get("permitrootlogin") in ("without-password", "prohibit-password", "no")


def test_unattended_upgrades_are_enabled(host):
    assert host.package("unattended-upgrades").is_installed
    periodic = host.check_output("apt-config dump APT::Periodic::Unattended-Upgrade")
    assert '"1"' in periodic, "APT::Periodic::Unattended-Upgrade is not 1: security updates are not automatic"


def test_security_updates_are_installed(host):
    """Security updates wait at most for the next nightly run of unattended-upgrades."""
    pending = pending_security_updates(ahead.run(host, PENDING_COMMAND).stdout.splitlines())
    stamps = host.run("stat -c '%%n %%Y' -- %s %s", LISTS_STAMP, UPGRADE_STAMP).stdout
    problem = overdue_updates(pending, parse_stamps(stamps))
    assert problem is None, problem


def test_no_service_runs_a_replaced_library(host):
    """needrestart (restarting automatically after updates) left no service on an old library."""
    stale = needrestart_units(ahead.run(host, NEEDRESTART))
    if not all(NEEDRESTART_DEFERS.match(unit) for unit in stale):
        # needrestart reads each process while it runs: a script that ends meanwhile (one of the
        # checks' own, like fail2ban-client, in ssh.service's cgroup without pam_systemd) passes
        # for one on a replaced file. A service that really runs one is named again.
        again = needrestart_units(host.run(NEEDRESTART))
        stale = [unit for unit in stale if unit in again]
    left = [unit for unit in stale if not NEEDRESTART_DEFERS.match(unit)]
    assert not left, (
        f"{', '.join(left)} still run(s) libraries an update replaced (their fixes are not in effect): "
        f"`sudo systemctl restart {' '.join(left)}`; needrestart should have done it (/etc/needrestart/conf.d/)"
    )
    if stale:
        pytest.skip(
            f"{', '.join(stale)} still run replaced libraries until the next reboot (needrestart never restarts "
            "them on its own: it would cut sessions or an update in progress); reboot when the group can spare "
            "a few minutes: `sudo systemctl reboot`"
        )


def test_swap_file_is_in_place(host, stack, in_container):
    if not stack["swap_mb"]:
        pytest.skip("sizing asks for no swap on this host")
    swapfile = file_states(host, "/swapfile").get("/swapfile")
    assert swapfile and swapfile.permissions == 0o600
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
    listening = public_tcp_listeners(listeners(host))
    # The ports that must never be public are probed by the check above.
    candidates = sorted(p for p in listening if p not in declared and p not in stack["never_public"])
    stray = answering(stack["address"], candidates)
    assert not stray, "; ".join(
        f"port {p} ({listening[p] or 'a program'}) answers from outside, but no service of this host needs it: "
        "stop that program, or remove the rule that opens it from the firewall (`sudo nft list ruleset`)"
        for p in stray
    )


def test_sshd_allows_no_forwarding(host):
    settings = sshd_settings(host)
    allowed = [key for key in ("allowtcpforwarding", "allowstreamlocalforwarding", "allowagentforwarding",
                               "x11forwarding", "permittunnel") if settings.get(key) != "no"]  # fmt: skip
    assert not allowed, (
        f"sshd allows {', '.join(allowed)}: a stolen key could tunnel into the services on loopback; "
        "check /etc/ssh/sshd_config.d/ (the first value sshd reads wins)"
    )


def test_ssh_logins_are_guarded_by_fail2ban(host, stack):
    assert_jails_active(host, stack, "base")


def test_kernel_is_hardened(host, stack, in_container):
    current = parse_kernel(ahead.run(host, read_kernel(stack["sysctl"])).stdout.splitlines())
    to_set, read_only = differences(stack["sysctl"], current)
    assert not to_set, (
        f"kernel settings differ from /etc/sysctl.d/60-commonstack-hardening.conf: {', '.join(to_set)}; "
        "`sudo sysctl --system` applies them (or `commonstack deploy`)"
    )
    absent = [key for key in stack["sysctl"] if not matching(key, current)]
    if read_only or absent:
        assert in_container, f"cannot set {', '.join(read_only + absent)} on this host: is /proc/sys read-only?"
        pytest.skip(
            "in a container some kernel settings belong to the machine's kernel (read-only or hidden there): "
            f"{', '.join(read_only + absent)}; every other setting is as wanted, and a real host gets them all"
        )


def test_unused_network_protocols_cannot_be_loaded(host, in_container):
    config = host.run("modprobe --showconfig")
    if config.rc != 0:
        pytest.skip(
            "in a container, which modules the machine's kernel loads is the machine's business"
            if in_container
            else "modprobe (kmod) is not installed: the kernel cannot load modules on demand here"
        )
    loadable = [p for p in UNUSED_PROTOCOLS if f"install {p} /bin/false" not in config.stdout.splitlines()]
    assert not loadable, (
        f"the kernel may load {', '.join(loadable)} on demand: see /etc/modprobe.d/commonstack-unused-protocols.conf"
    )


def test_files_holding_secrets_are_private(host, stack):
    """Every file the kit wrote a secret into is still as private as it was written."""
    loose = []
    states = file_states(host, *(wanted["path"] for wanted in stack["secret_files"]))
    for wanted in stack["secret_files"]:
        found = states.get(wanted["path"])
        if not found:
            continue  # its layer's checks say when a file is missing
        mode, expected = found.permissions, int(wanted["mode"], 8)
        if mode & ~expected or (found.user, found.group) != (wanted["user"], wanted["group"]):
            loose.append(f"{wanted['path']} is {mode:04o} {found.user}:{found.group}, "
                         f"not {wanted['mode']} {wanted['user']}:{wanted['group']}")  # fmt: skip
    assert not loose, "; ".join(loose) + ": it holds a secret; `commonstack deploy` puts the mode back"


def test_no_file_anyone_can_read_in_etc_holds_a_secret(host, stack):
    """The group's secrets (compared as digests: no value leaves this machine) in no world-readable file."""
    result = ahead.run(host, *scan_command(stack["secret_digests"]))
    assert result.rc == 0, f"the scan for exposed secrets could not run: {result.stderr.strip()[-300:]}"
    exposed = parse_scan(result.stdout)
    assert not exposed, "; ".join(
        f"{path} is readable by everyone and holds {', '.join(names)} (secrets.yaml)" for path, names in exposed.items()
    ) + ": `sudo chmod o-r FILE`, or keep the secret in a file only its service reads"


# Last of these checks: a closed port proves itself by a timeout (probes.py), and the probes
# started at the host's first check have had the other checks' time to finish.
def test_database_and_admin_ports_are_closed_from_outside(stack):
    """Probed from this machine: databases, caches and app servers must not be reachable."""
    open_ports = answering(stack["address"], stack["never_public"])
    assert not open_ports, f"ports {open_ports} answer from outside: check /etc/nftables.conf on the host"


# --- reading what the host says ---------------------------------------------------------------


def parse_stamps(stat_output: str) -> dict[str, float]:
    """`stat -c '%n %Y' FILES` -> {path: modification time}; files that do not exist are left out."""
    stamps = {}
    for line in stat_output.splitlines():
        path, _, seconds = line.rpartition(" ")
        if seconds.isdigit():
            stamps[path] = float(seconds)
    return stamps


def overdue_updates(pending: list[str], stamps: dict[str, float]) -> str | None:
    """Why pending security updates are overdue, or None.

    They are overdue once unattended-upgrades ran after the package lists that show them were
    fetched: it saw them and did not install them (a held package, a question about a config
    file, a full disk). Before that run they are only waiting for the night.
    """
    if not pending:
        return None
    lists, upgraded = stamps.get(LISTS_STAMP), stamps.get(UPGRADE_STAMP)
    if lists is None or upgraded is None or upgraded < lists:
        return None
    when = datetime.datetime.fromtimestamp(upgraded, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    shown = ", ".join(pending[:5]) + (f" and {len(pending) - 5} more" if len(pending) > 5 else "")
    return (
        f"{len(pending)} security update(s) not installed although unattended-upgrades ran since ({when}): {shown}; "
        "/var/log/unattended-upgrades/unattended-upgrades.log says why; `commonstack deploy` installs them"
    )


def needrestart_units(result) -> list[str]:
    """The services a run of NEEDRESTART names."""
    assert result.rc == 0, f"needrestart does not run ({result.stderr.strip()[-200:]}): is it installed?"
    return services_to_restart(result.stdout)


def services_to_restart(batch_output: str) -> list[str]:
    """`needrestart -b` output -> the services it would restart (its NEEDRESTART-SVC lines)."""
    return [line.split(":", 1)[1].strip() for line in batch_output.splitlines() if line.startswith("NEEDRESTART-SVC:")]
