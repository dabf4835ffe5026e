"""coturn from Debian: TURN for Matrix calls, with Synapse's shared secret and Caddy's certificate."""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import FactBase, deploy, operation
from pyinfra.operations import apt, files, systemd

from commonstack.deploys.configs import changed, put_configs
from commonstack.plan import HostPlan
from commonstack.stacks.paths import COTURN_CERTIFICATE_SCRIPT as CERTIFICATE_SCRIPT


class CoturnCertificate(FactBase[str]):
    """coturn's copy of Caddy's certificate: current, stale, waiting (Caddy has none yet), or
    unknown (the script that knows is not installed yet)."""

    def command(self, hostname: str) -> str:
        script = CERTIFICATE_SCRIPT
        return f"if [ -x {script} ]; then {script} --check {shlex.quote(hostname)}; else echo unknown; fi"

    def default(self) -> str:
        return "unknown"

    def process(self, output) -> str:
        lines = [line.strip() for line in output if line.strip()]
        return lines[-1] if lines else "unknown"


@operation()
def coturn_certificate(hostname: str):
    """Give coturn a copy of Caddy's certificate for `hostname` when its copy is missing or old.

    + hostname: the TLS name clients use for turns: URIs (Synapse's hostname)

    The script restarts coturn when it installs a new copy; its hourly timer keeps it current.
    """
    state = host.get_fact(CoturnCertificate, hostname=hostname)
    if state in ("current", "waiting"):
        host.noop(f"coturn's certificate for {hostname} is {state}")
        return
    yield f"{CERTIFICATE_SCRIPT} {shlex.quote(hostname)}"


@deploy("coturn")
def coturn(plan: HostPlan) -> None:
    """Install coturn (TURN REST API secret shared with Synapse), its TLS copy, and start it.

    Example, in a pyinfra deploy file::

        from commonstack.deploys.coturn import coturn
        coturn(plan)   # plan = commonstack.plan.plan_host(profile, host, secrets, release)
    """
    matrix_hostname = plan.profile.hostnames()["matrix"]
    apt.packages(name="Install coturn", packages=plan.packages_of(("coturn",)), no_recommends=True)
    # The certificate helper's sandbox lets it write here only: the folder must exist before it runs.
    files.directory(name="coturn's folder for its TLS copy", path="/etc/coturn", mode="0755")
    configs = put_configs(plan, "coturn")
    units = [op for f, op in zip(plan.files_of("coturn"), configs) if f.path.startswith("/etc/systemd/")]
    systemd.daemon_reload(name="Reload systemd for coturn's units", _if=changed(units))
    coturn_certificate(name="coturn's copy of the TLS certificate", hostname=matrix_hostname)
    systemd.service(
        name="Restart coturn for the new settings",
        service="coturn",
        running=True,
        restarted=True,
        _if=changed(configs),
    )
    systemd.service(name="coturn running", service="coturn", running=True, enabled=True)
    systemd.service(
        name="Keep coturn's certificate current (timer)",
        service="coturn-certificate.timer",
        running=True,
        enabled=True,
    )
