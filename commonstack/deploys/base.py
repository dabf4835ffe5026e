"""The hardened base every host gets: security updates (now, and every night), time, swap, admin
user, sshd, firewall, fail2ban, kernel hardening, journald."""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from commonstack.deploys.configs import changed, put_configs
from commonstack.deploys.facts import InContainer
from commonstack.deploys.kernel import kernel_settings
from commonstack.deploys.swap import swapfile
from commonstack.deploys.updates import security_updates
from commonstack.plan import CA_FOLDER, HostPlan
from commonstack.stacks.paths import STATE_DIR

# apt-daily refreshes the lists every day; only a staler cache warrants an update of our own.
APT_CACHE_SECONDS = 2 * 24 * 3600
SUDOERS = "/etc/sudoers.d/commonstack-admin"
# sudo reads every file of /etc/sudoers.d: the drop-in is checked by visudo here, outside it, first.
STAGED_SUDOERS = f"{STATE_DIR}/sudoers-commonstack-admin"


@deploy("Base system")
def base(plan: HostPlan) -> None:
    """Security updates, time sync, swap, admin user, hardened sshd, nftables, fail2ban, sysctl, journald cap.

    Example, in a pyinfra deploy file::

        from commonstack.deploys.base import base
        base(plan)   # plan = commonstack.plan.plan_host(profile, host, secrets, release)
    """
    refresh = apt.update(name="Refresh the package lists (when older than two days)", cache_time=APT_CACHE_SECONDS)
    apt.packages(name="Install base packages", packages=plan.packages_of(("base",)), no_recommends=True)
    files.directory(name="Kit state folder", path=STATE_DIR, mode="0700")

    # A broken sudoers drop-in breaks sudo for everyone: visudo checks it before it is put in place.
    # A refused file is removed from the staging place, so the next deploy checks it again.
    sudoers = next(f for f in plan.files_of("base") if f.path == SUDOERS)
    staged = files.put(
        name="Stage the sudoers drop-in",
        src=StringIO(sudoers.content),
        dest=STAGED_SUDOERS,
        mode=sudoers.mode,
        user="root",
        group="root",
    )
    server.shell(
        name="Check the sudoers drop-in with visudo before it is used",
        commands=[f"visudo -c -f {STAGED_SUDOERS} || {{ rm -f {STAGED_SUDOERS}; exit 1; }}"],
        _if=changed([staged]),
    )
    configs = put_configs(plan, "base")
    by_path = {op_path: op for op_path, op in zip((f.path for f in plan.files_of("base")), configs)}
    ca_files = [op for path, op in by_path.items() if path.startswith(CA_FOLDER)]
    server.shell(
        name="Trust the extra CA certificates",
        commands=["update-ca-certificates"],
        _if=changed(ca_files),
    )
    # After needrestart's settings are written: its apt hook restarts what the updates replaced.
    security_updates(
        name="Install the pending security updates (unattended-upgrades does it every night)",
        lists_refreshed=refresh.will_change,
    )

    admin = plan.profile.admin
    server.user(
        name=f"Admin user {admin.user} with sudo",
        user=admin.user,
        shell="/bin/bash",
        groups=["sudo"],
        public_keys=admin.ssh_keys or None,
        delete_keys=bool(admin.ssh_keys),
        ensure_home=True,
    )
    swapfile(name=f"Swap file of {plan.sizing.swap_mb} MB", path="/swapfile", size_mb=plan.sizing.swap_mb)

    sshd = [op for path, op in by_path.items() if path.startswith("/etc/ssh/")]
    nftables = [op for path, op in by_path.items() if path == "/etc/nftables.conf"]
    journald = [op for path, op in by_path.items() if path.startswith("/etc/systemd/journald")]
    fail2ban_unit = [op for path, op in by_path.items() if path.startswith("/etc/systemd/system/fail2ban")]
    fail2ban = [op for path, op in by_path.items() if path.startswith("/etc/fail2ban/")]

    server.shell(
        name="Check the sshd configuration before reloading it",
        commands=["sshd -t"],
        _if=changed(sshd),
    )
    systemd.service(name="Reload sshd", service="ssh", reloaded=True, _if=changed(sshd))
    # Before the firewall is reloaded: fail2ban's drop-in restarts it with the firewall (PartOf).
    systemd.daemon_reload(name="Reload systemd for fail2ban's drop-in", _if=changed(fail2ban_unit))
    systemd.service(name="Firewall (nftables) enabled", service="nftables", running=True, enabled=True)
    systemd.service(name="Apply the firewall rules", service="nftables", restarted=True, _if=changed(nftables))
    systemd.service(
        name="Restart journald", service="systemd-journald", restarted=True, _if=changed(journald)
    )
    # Installing fail2ban starts it with Debian's defaults, which fail without /var/log/auth.log.
    systemd.service(
        name="Restart fail2ban for the new jails",
        service="fail2ban",
        running=True,
        restarted=True,
        _if=changed(fail2ban, fail2ban_unit),
    )
    systemd.service(name="fail2ban running", service="fail2ban", running=True, enabled=True)
    kernel_settings(name="Kernel hardening (sysctl)", settings=dict(plan.sysctl))
    systemd.service(
        name="Unattended upgrades enabled", service="unattended-upgrades", running=True, enabled=True
    )
    # timesyncd does not run in containers (ConditionVirtualization); enabling it is still right.
    systemd.service(
        name="Time synchronisation enabled",
        service="systemd-timesyncd",
        running=not host.get_fact(InContainer),
        enabled=True,
    )
