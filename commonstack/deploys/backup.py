"""Backups with restic: the host's backup script (rendered from the layer registry), its timers,
the repository's access (password, the host's own SSH key, the server's pinned key) and the
repository itself, created once.

The script (/usr/local/sbin/commonstack-backup, see its header) does the work on the host: the
daily backup, the weekly `restic check`, and the steps of `commonstack restore`.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import FactBase, deploy, operation
from pyinfra.operations import apt, files, systemd

from commonstack.deploys.configs import changed, put_configs
from commonstack.errors import CommonstackError
from commonstack.plan import BACKUP_KNOWN_HOSTS, HostPlan
from commonstack.stacks.paths import BACKUP_SCRIPT, BACKUP_STATE
from commonstack.stacks.repository import parse_repository

TIMERS = ("commonstack-backup.timer", "commonstack-backup-check.timer")


class BackupNotReady(CommonstackError):
    """The profile's repository cannot be used as it stands (e.g. its server's key is not pinned)."""


class InitializedRepository(FactBase[str]):
    """The repository address this host last created or found its repository at ("" if none)."""

    def command(self) -> str:
        return f"cat {shlex.quote(BACKUP_STATE)}/initialized 2>/dev/null || true"

    def default(self) -> str:
        return ""

    def process(self, output) -> str:
        lines = [line.strip() for line in output if line.strip()]
        return lines[0] if lines else ""


@operation()
def restic_repository(address: str, script: str = BACKUP_SCRIPT):
    """Create the restic repository at `address`, or find it there, once per address.

    + address: the profile's backup.repository
    + script: the host's backup script, whose `init` creates the repository unless it exists
      and fails, in one line, when it does not answer or does not open with the password
    """
    if host.get_fact(InitializedRepository) == address:
        host.noop(f"the repository {address} is in use")
        return
    yield f"{script} init"


def backup_preflight(plan: HostPlan) -> None:
    """Refuse, before any change, an SFTP repository whose server's SSH key is not pinned."""
    repository = parse_repository(plan.profile.backup.repository or "")
    if repository.kind != "sftp":
        return
    pinned = next((f.content for f in plan.files if f.path == BACKUP_KNOWN_HOSTS), "")
    if not pinned.strip():
        raise BackupNotReady(
            f"backup.repository: the SSH key of {repository.server} is not pinned in the group's known_hosts: "
            f"run `commonstack pin-keys {plan.profile.group}` and compare its fingerprint with the server's"
        )


@deploy("Backups")
def backup(plan: HostPlan) -> None:
    """Install restic, the backup script and its timers, and create the repository.

    Example, in a pyinfra deploy file::

        from commonstack.deploys.backup import backup
        backup(plan)   # plan = commonstack.plan.plan_host(profile, host, secrets, release)
    """
    backup_preflight(plan)  # when called on its own; stack.py runs it before every layer's operations
    apt.packages(name="Install restic", packages=plan.packages_of(("backup",)), no_recommends=True)
    files.directory(name=f"Backup records {BACKUP_STATE}", path=BACKUP_STATE, mode="0700", user="root", group="root")
    configs = put_configs(plan, "backup")
    units = [op for f, op in zip(plan.files_of("backup"), configs) if f.path.startswith("/etc/systemd/")]
    restic_repository(name="The restic repository (created once)", address=plan.profile.backup.repository)
    systemd.daemon_reload(name="Reload systemd for the backup units", _if=changed(units))
    for timer in TIMERS:
        systemd.service(name=f"{timer} enabled", service=timer, running=True, enabled=True)
