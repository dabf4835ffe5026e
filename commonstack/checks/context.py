"""What the checks expect of each host, derived from the same plan the deploy used."""

from __future__ import annotations

from commonstack.rendering import HostPlan, firewall_ports

# Ports that no commonstack host should ever expose (databases, caches, admin APIs, app servers).
NEVER_PUBLIC = [25, 2019, 3306, 5432, 6379, 8008, 8080, 8448, 9000, 11211]


def host_expectations(plan: HostPlan) -> dict:
    services = plan.profile.services_on(plan.host)
    return {
        "name": plan.host.name,
        "address": plan.host.address,
        "layers": list(plan.layers),
        "services": sorted(services),
        "firewall_ports": firewall_ports(plan.profile, plan.host),
        "never_public": [p for p in NEVER_PUBLIC if p != plan.host.port],
        "hostnames": {s: n for s, n in plan.profile.hostnames().items() if s in services},
        "delegation": plan.profile.server_name if "matrix" in services else None,
        "swap_mb": plan.sizing.swap_mb,
        "redis_maxmemory_mb": plan.sizing.redis_maxmemory_mb,
        "postgres_shared_buffers_mb": plan.sizing.postgres_shared_buffers_mb,
        "postgresql_version": plan.postgresql_version,
        "databases": _databases(services),
        "admin_user": plan.profile.admin.user,
        "tls_mode": plan.profile.tls.mode,
    }


def _databases(services: frozenset[str]) -> dict[str, str | None]:
    """Database name -> required collation (None: the cluster's default)."""
    wanted = {}
    if "nextcloud" in services:
        wanted["nextcloud"] = None
    if "matrix" in services:
        wanted["synapse"] = "C"
    return wanted
