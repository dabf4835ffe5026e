"""Redis from Debian on a unix socket, capped by sizing, for Nextcloud's locking and cache."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import apt, systemd

from commonstack.deploys.configs import changed, put_configs
from commonstack.plan import HostPlan


@deploy("Redis")
def redis(plan: HostPlan) -> None:
    """Install Redis and serve it on /run/redis/redis-server.sock only (no TCP port)."""
    apt.packages(name="Install Redis", packages=plan.packages_of(("redis",)), no_recommends=True)
    configs = put_configs(plan, "redis")
    systemd.service(name="Redis running", service="redis-server", running=True, enabled=True)
    systemd.service(
        name="Restart Redis for the new settings",
        service="redis-server",
        restarted=True,
        _if=changed(configs),
    )
