"""Debian's own updates, the base layer's upgrade (commonstack/upgrades.py runs it, see
deploys/upgrade.py): what `apt-get upgrade` brings within the host's Debian release (a point
release, security and stable updates), never another release.

1. prepare: the pre-upgrade backup, when the host has the backup layer;
2. apply: an interrupted dpkg finished first (`dpkg --configure -a`), the package lists
   refreshed, the updates installed (new dependencies allowed, nothing removed; changed config
   files of the admin's kept: --force-confold), then the services that still run old libraries
   restarted by needrestart (the base layer installs it; without it nothing is restarted and the
   verdict says so). A reboot (a new kernel) only with `--reboot`.

apt cannot go back: there is no rollback; a failed health gate after the updates says what fails.
"""

from __future__ import annotations

from commonstack.deploys.updates import RESTART_REPLACED
from commonstack.deploys.upgrade import UpgradeContext

APT = (
    "DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l NEEDRESTART_SUSPEND=1 apt-get -q -y "
    "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
)
REBOOT_DELAY_SECONDS = 3  # the reboot waits for the SSH session that asked for it to end


def leftovers(ctx: UpgradeContext) -> dict[str, list[str]]:
    return {}


def prepare(ctx: UpgradeContext) -> None:
    pass  # nothing to put beside the running system: apt installs in place


def apply(ctx: UpgradeContext) -> None:
    ctx.step(
        "updated",
        f"DEBIAN_FRONTEND=noninteractive dpkg --configure -a && apt-get -q update && {APT} upgrade --with-new-pkgs",
        "Install Debian's updates within the host's release (apt-get upgrade)",
    )
    ctx.step("restarted", RESTART_REPLACED, "Restart the services that still run old libraries (needrestart)")


def reboot(ctx: UpgradeContext) -> None:
    ctx.step(
        "rebooted",
        f"systemd-run --on-active={REBOOT_DELAY_SECONDS} systemctl reboot",
        "Reboot (asked for with --reboot): a new kernel or core library takes effect",
    )
