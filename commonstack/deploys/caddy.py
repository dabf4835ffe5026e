"""Caddy from Debian: the one reverse proxy, with certificates from ACME or its own CA, in systemd's sandbox."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import apt, server, systemd

from commonstack.deploys.configs import changed, put_configs
from commonstack.plan import HostPlan


@deploy("Caddy")
def caddy(plan: HostPlan) -> None:
    """Install Caddy, write the Caddyfile (a site per service), validate it, then reload; a changed
    sandbox (the drop-in over Debian's unit) restarts it instead."""
    apt.packages(name="Install Caddy", packages=plan.packages_of(("caddy",)), no_recommends=True)
    configs = put_configs(plan, "caddy")
    written = dict(zip((f.path for f in plan.files_of("caddy")), configs))
    sandbox = [op for path, op in written.items() if path.startswith("/etc/systemd/")]
    sites = [op for path, op in written.items() if not path.startswith("/etc/systemd/")]
    server.shell(
        name="Validate the Caddyfile",
        commands=["caddy validate --config /etc/caddy/Caddyfile --adapter caddyfile"],
        _if=changed(sites),
    )
    systemd.daemon_reload(name="Reload systemd for Caddy's sandbox", _if=changed(sandbox))
    # Apart from starting it: a running Caddy that is only enabled has not read its new sites.
    systemd.service(name="Caddy starts at boot", service="caddy", running=None, enabled=True)
    started = systemd.service(name="Caddy running", service="caddy", running=True)
    # Caddy asks for certificates as soon as it reads its sites: a restart or reload right after
    # it started would cut that short, and each cut-short attempt counts against the CA's limits.
    restarted = systemd.service(
        name="Restart Caddy in its new sandbox",
        service="caddy",
        restarted=True,
        _if=changed(sandbox, unless=[started]),
    )
    systemd.service(
        name="Reload Caddy", service="caddy", reloaded=True, _if=changed(sites, unless=[started, restarted])
    )
