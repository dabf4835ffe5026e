"""What the checks expect of each host, derived from the same plan the deploy used."""

from __future__ import annotations

from commonstack.rendering import HostPlan, firewall_ports, versions

# Ports that no commonstack host should ever expose (databases, caches, admin APIs, app servers).
NEVER_PUBLIC = [25, 2019, 3306, 5432, 6379, 8008, 8080, 8448, 9000, 11211]


def host_expectations(plan: HostPlan, layers: tuple[str, ...] | None = None) -> dict:
    """What the checks expect of the host; `layers`: only these of its layers (what was deployed)."""
    services = plan.profile.services_on(plan.host)
    turn = plan.profile.matrix.turn
    return {
        "name": plan.host.name,
        "address": plan.host.address,
        # The host's public IPv4 when it is behind NAT, where the profile says it (for the DNS check).
        "public_ipv4": turn.external_ip if "turn" in services else None,
        "layers": [layer for layer in plan.layers if layers is None or layer in layers],
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
        "php_version": plan.php_version,
        # The WebDAV round trip logs in as Nextcloud's admin (deploys/nextcloud.py ADMIN_USER): the
        # only secret the checks receive; no check message or assertion ever shows it.
        "nextcloud": {
            "version": versions()["nextcloud"]["version"],
            "admin_user": "admin",
            "admin_password": plan.secrets.get("nextcloud_admin_password"),
        }
        if "nextcloud" in services
        else None,
        # Discourse's mail relay (its address only): the check compares it with app.yml and the container.
        "discourse_smtp_host": plan.profile.smtp.host if "discourse" in services and plan.profile.smtp else None,
        # Synapse (deploys/synapse.py). No password here: the admin login check reads the root-only
        # copy the deploy keeps on the host, so the password never leaves it.
        "matrix": {
            "server_name": plan.profile.server_name,
            "hostname": plan.profile.hostnames()["matrix"],
            "version": versions()["synapse"]["version"],
            "admin_user_id": f"@admin:{plan.profile.server_name}",
            "registration": plan.profile.matrix.registration,
        }
        if "matrix" in services
        else None,
    }


def _databases(services: frozenset[str]) -> dict[str, str | None]:
    """Database name -> required collation (None: the cluster's default)."""
    wanted = {}
    if "nextcloud" in services:
        wanted["nextcloud"] = None
    if "matrix" in services:
        wanted["synapse"] = "C"
    return wanted
