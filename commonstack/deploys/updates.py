"""Security updates from the first deploy on: a fact of what is pending, and installing it now.

unattended-upgrades installs security updates every night; a host deployed today would otherwise
run with known holes until then (what an audit right after a deploy found). The deploy installs
what Debian's security archive has for the packages on the host; needrestart's apt hook (base
sets it to restart without asking) then restarts the services still running replaced libraries.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import FactBase, operation
from pyinfra.facts.apt import noninteractive_apt

from commonstack.stacks.updates import PENDING_COMMAND, SECURITY_UPGRADES, pending_security_updates

# A deploy may start while apt-daily refreshes or upgrades: wait for its lock instead of failing.
LOCK_TIMEOUT_SECONDS = 600
# The pending security updates as the package lists say when it runs (they may have just been
# refreshed, after the facts were read), installed in one apt transaction.
INSTALL = (
    f"pending=$({SECURITY_UPGRADES}); "
    'if [ -n "$pending" ]; then '
    + noninteractive_apt(f"-o DPkg::Lock::Timeout={LOCK_TIMEOUT_SECONDS} install --only-upgrade $pending")
    + "; fi"
)

# For apt.packages' extra_install_args: the same updates, read when that transaction runs.
WITH_SECURITY_UPDATES = f"$({SECURITY_UPGRADES})"
# needrestart, restarting what still runs a replaced library (as its apt hook does with base's
# settings), where it is installed. Not in batch mode (-b): that only lists them.
RESTART_REPLACED = "if command -v needrestart >/dev/null; then needrestart -r a -l -q; fi"


class PendingSecurityUpdates(FactBase[list[str]]):
    """Installed packages with a newer version in Debian's security archive::

        ["libssl3 3.0.15-1~deb12u1 -> 3.0.17-1~deb12u2", ...]

    Read against the package lists as they are when the deploy is planned.
    """

    def command(self) -> str:
        return PENDING_COMMAND

    def default(self) -> list[str]:
        return []

    def process(self, output) -> list[str]:
        return pending_security_updates(output)


@operation()
def security_updates(lists_refreshed: bool = False):
    """Install the pending security updates (upgrades of installed packages only).

    + lists_refreshed: whether this deploy refreshes the package lists before this operation
      (then what is pending is known only when it runs, and it runs)

    Config files changed on the host are kept (dpkg's --force-confold), as unattended-upgrades does.

    **Example:**

    .. code:: python

        refresh = apt.update(name="Refresh the package lists", cache_time=3600)
        security_updates(name="Install pending security updates", lists_refreshed=refresh.will_change)
    """
    pending = host.get_fact(PendingSecurityUpdates)
    if not pending and not lists_refreshed:
        host.noop("no security update is pending")
        return
    yield INSTALL
