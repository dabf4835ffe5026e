"""PostgreSQL from Debian, tuned by sizing, with one role and database per service."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.postgres import PostgresRoles
from pyinfra.operations import apt, postgres, systemd

from commonstack.deploys.configs import changed, put_configs
from commonstack.deploys.identity import operation_identity
from commonstack.plan import HostPlan
from commonstack.stacks.layers import LAYERS, Database

AS_POSTGRES = {"_sudo": True, "_sudo_user": "postgres", "_use_sudo_login": True}


@deploy("PostgreSQL")
def first_start_settings(plan: HostPlan) -> list[OperationMeta] | None:
    """Where PostgreSQL is not installed yet: write its settings and sandbox before the package is,
    so that the cluster Debian creates starts with them and needs no restart (Debian's
    pg_ctlcluster takes 2 s to start one). pg_createcluster keeps the conf.d folder it finds: it
    refuses only an existing postgresql.conf or pg_hba.conf. None where PostgreSQL is installed."""
    installed = host.get_fact(DebPackages)
    if all(package in installed for package in plan.packages_of(("postgres",))):
        return None
    return put_configs(plan, "postgres")


@deploy("PostgreSQL")
def postgresql(plan: HostPlan, first_start: list[OperationMeta] | None = None) -> None:
    """Install PostgreSQL, apply the sizing, and create each service's role and database.

    Passwords are set when a role is created (scram-sha-256) and never sent again, so
    re-deploys change nothing.

    + first_start: the operations of first_start_settings, when they wrote the settings before
      PostgreSQL was installed (its first start read them); None: they are written here
    """
    apt.packages(name="Install PostgreSQL", packages=plan.packages_of(("postgres",)), no_recommends=True)
    if first_start is None:
        configs = put_configs(plan, "postgres")
        sandbox = [op for f, op in zip(plan.files_of("postgres"), configs) if f.path.startswith("/etc/systemd/")]
        systemd.daemon_reload(name="Reload systemd for PostgreSQL's sandbox", _if=changed(sandbox))
    systemd.service(name="PostgreSQL running", service="postgresql", running=True, enabled=True)
    if first_start is None:
        systemd.service(
            name="Restart PostgreSQL for the new settings or sandbox",
            service="postgresql",
            restarted=True,
            _if=changed(configs),
        )
    existing_roles = host.get_fact(PostgresRoles, **AS_POSTGRES)
    # Each database keeps the identity marker of its layer's place in the registry (pyinfra #1370).
    for marker, item in enumerate(LAYERS):
        if item.name in plan.layers:
            for database in item.databases:
                with operation_identity(marker):
                    _role_and_database(database, existing_roles, plan.secrets)


def _role_and_database(database: Database, existing_roles: dict, secrets) -> None:
    postgres.role(
        name=f"Database role {database.name}",
        role=database.name,
        login=True,
        password=None if database.name in existing_roles else secrets[database.password_secret],
        **AS_POSTGRES,
    )
    # A collation other than the cluster's needs template0; Synapse also needs UTF8 with it.
    collation = (
        {"encoding": "UTF8", "lc_collate": database.collation, "lc_ctype": database.collation, "template": "template0"}
        if database.collation
        else {}
    )
    postgres.database(
        name=f"Database {database.name}",
        database=database.name,
        owner=database.name,
        **collation,
        **AS_POSTGRES,
    )
