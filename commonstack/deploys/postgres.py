"""PostgreSQL from Debian, tuned by sizing, with one role and database per service."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.postgres import PostgresRoles
from pyinfra.operations import apt, postgres, systemd

from commonstack.deploys.configs import changed, put_configs
from commonstack.deploys.identity import operation_identity
from commonstack.rendering import HostPlan

# Synapse requires C collation and UTF8 (its docs: "Set up database"); template0 allows both.
DATABASES = {
    "nextcloud": {"role": "nextcloud", "secret": "postgres_nextcloud_password", "options": {}},
    "matrix": {
        "role": "synapse",
        "secret": "postgres_synapse_password",
        "options": {"encoding": "UTF8", "lc_collate": "C", "lc_ctype": "C", "template": "template0"},
    },
}
AS_POSTGRES = {"_sudo": True, "_sudo_user": "postgres", "_use_sudo_login": True}


@deploy("PostgreSQL")
def postgresql(plan: HostPlan) -> None:
    """Install PostgreSQL, apply the sizing, and create each service's role and database.

    Passwords are set when a role is created (scram-sha-256) and never sent again, so
    re-deploys change nothing.
    """
    version = plan.postgresql_version
    apt.packages(name="Install PostgreSQL", packages=[f"postgresql-{version}"], no_recommends=True)
    configs = put_configs(plan, "postgres")
    systemd.service(name="PostgreSQL running", service="postgresql", running=True, enabled=True)
    systemd.service(
        name="Restart PostgreSQL for the new settings",
        service="postgresql",
        restarted=True,
        _if=changed(configs),
    )
    existing_roles = host.get_fact(PostgresRoles, **AS_POSTGRES)
    for marker, (service, wanted) in enumerate(DATABASES.items()):
        if service in plan.profile.services_on(plan.host):
            with operation_identity(marker):
                _role_and_database(wanted, existing_roles, plan.secrets)


def _role_and_database(wanted: dict, existing_roles: dict, secrets) -> None:
    postgres.role(
        name=f"Database role {wanted['role']}",
        role=wanted["role"],
        login=True,
        password=None if wanted["role"] in existing_roles else secrets[wanted["secret"]],
        **AS_POSTGRES,
    )
    postgres.database(
        name=f"Database {wanted['role']}",
        database=wanted["role"],
        owner=wanted["role"],
        **wanted["options"],
        **AS_POSTGRES,
    )
