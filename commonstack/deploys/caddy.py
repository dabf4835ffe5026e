"""Caddy from Debian: the one reverse proxy, with certificates from ACME or its own CA."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import apt, server, systemd

from commonstack.deploys.configs import changed, put_configs
from commonstack.plan import HostPlan


@deploy("Caddy")
def caddy(plan: HostPlan) -> None:
    """Install Caddy, write the Caddyfile (a site per service), validate it, then reload."""
    apt.packages(name="Install Caddy", packages=plan.packages_of(("caddy",)), no_recommends=True)
    configs = put_configs(plan, "caddy")
    server.shell(
        name="Validate the Caddyfile",
        commands=["caddy validate --config /etc/caddy/Caddyfile --adapter caddyfile"],
        _if=changed(configs),
    )
    systemd.service(name="Caddy running", service="caddy", running=True, enabled=True)
    systemd.service(name="Reload Caddy", service="caddy", reloaded=True, _if=changed(configs))
