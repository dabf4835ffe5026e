"""What the checks expect of each host, derived from the same plan the deploy used."""

from __future__ import annotations

from dataclasses import asdict

from commonstack.checks.exposed_secrets import MIN_LENGTH, secret_digests
from commonstack.plan import HostPlan
from commonstack.stacks.layers import databases_on, firewall_ports, layer
from commonstack.stacks.paths import MATRIX_ADMIN_LOCALPART, NEXTCLOUD_ADMIN
from commonstack.stacks.versions import versions

# Ports that no commonstack host should ever expose (databases, caches, admin APIs, app servers).
NEVER_PUBLIC = [25, 2019, 3306, 5432, 6379, 8008, 8080, 8448, 9000, 11211]


def host_expectations(plan: HostPlan, layers: tuple[str, ...] | None = None, exact_versions: bool = False) -> dict:
    """What the checks expect of the host; `layers`: only these of its layers (what was deployed).

    A service expects the release the profile wants; an older known release passes, saying that
    an upgrade is pending, unless `exact_versions` (an upgrade's health gate, which wants its target).
    """
    profile, services = plan.profile, plan.services
    checked = [name for name in plan.layers if layers is None or name in layers]
    return {
        "name": plan.host.name,
        "address": plan.host.address,
        # The host's public IPv4 when it is behind NAT, where the profile says it (for the DNS check).
        "public_ipv4": profile.matrix.turn.external_ip if "turn" in services else None,
        "layers": checked,
        "units": {name: plan.units_of(name) for name in checked},  # what each runs (host_state.unit_state)
        "services": sorted(services),
        "firewall_ports": [asdict(port) for port in firewall_ports(profile, plan.host)],
        "never_public": [p for p in NEVER_PUBLIC if p != plan.host.port],
        "hostnames": {s: n for s, n in profile.hostnames().items() if s in services},
        "delegation": profile.server_name if "matrix" in services else None,
        "swap_mb": plan.sizing.swap_mb,
        "redis_maxmemory_mb": plan.sizing.redis_maxmemory_mb,
        "postgres_shared_buffers_mb": plan.sizing.postgres_shared_buffers_mb,
        "postgresql_version": plan.postgresql_version,
        "databases": {d.name: d.collation for d in databases_on(profile, plan.host)},
        "admin_user": profile.admin.user,
        "tls_mode": profile.tls.mode,
        # Hardening: each layer's sandboxed units and fail2ban jails, the kernel settings, the files
        # the kit wrote with a secret in them (and their modes), and digests to find secrets in
        # files anyone can read (exposed_secrets.py: never a value).
        "sandboxed": {name: plan.sandboxed_units_of(name) for name in checked},
        "jails": {name: list(layer(name).jails) for name in checked},
        "sysctl": dict(plan.sysctl),
        "secret_files": [
            {"path": f.path, "mode": f.mode, "user": f.user, "group": f.group}
            for f in plan.files
            if f.layer in checked and any(len(v) >= MIN_LENGTH and v in f.content for v in plan.secrets.values())
        ],
        "secret_digests": secret_digests(plan.secrets),
        "php_version": plan.php_version,
        "docker_min_version": versions().discourse_docker.docker_min_version,
        # The WebDAV round trip logs in as Nextcloud's admin: the only secret the checks receive; no
        # check message or assertion ever shows it.
        "nextcloud": {
            "version": plan.wanted_version("nextcloud"),
            "exact_version": exact_versions,
            "admin_user": NEXTCLOUD_ADMIN,
            "admin_password": plan.secrets.get("nextcloud_admin_password"),
            "apps": list(profile.nextcloud.apps),  # installed and enabled by the deploy
        }
        if "nextcloud" in services
        else None,
        # Discourse's mail relay (its address only): the check compares it with app.yml and the container.
        "discourse_smtp_host": profile.smtp.host if "discourse" in services and profile.smtp else None,
        # Synapse. No password here: the admin login check reads the root-only copy the deploy keeps
        # on the host, so the password never leaves it.
        "matrix": {
            "server_name": profile.server_name,
            "hostname": profile.hostnames()["matrix"],
            "version": plan.wanted_version("synapse"),
            "exact_version": exact_versions,
            "admin_user_id": f"@{MATRIX_ADMIN_LOCALPART}:{profile.server_name}",
            "registration": profile.matrix.registration,
        }
        if "matrix" in services
        else None,
    }
