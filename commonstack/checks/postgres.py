"""Health checks of PostgreSQL: running, local only, tuned, one database per service."""

from __future__ import annotations

from commonstack.checks import ahead
from commonstack.checks.expect import assert_sandboxed, require_layer

PSQL = "sudo -u postgres psql -XAtc %s"
SETTINGS = ("SHOW shared_buffers", "SHOW password_encryption")


def _owner_and_collation(database: str) -> str:
    return f"SELECT pg_get_userbyid(datdba), datcollate FROM pg_database WHERE datname = '{database}'"


def slowest_commands(stack: dict) -> list[tuple[str, ...]]:
    """Started at the host's first check (ahead.py): each query a sudo and a connection."""
    if "postgres" not in stack["layers"]:
        return []
    return [(PSQL, query) for query in [*SETTINGS, *map(_owner_and_collation, stack["databases"])]]


def _sql(host, query: str) -> str:
    return ahead.check_output(host, PSQL, query).strip()


def test_postgresql_is_running(host, stack):
    require_layer(stack, "postgres")
    assert host.service("postgresql").is_running, "PostgreSQL is down: `journalctl -u postgresql@*`"


def test_postgresql_listens_on_localhost_only(host, stack):
    require_layer(stack, "postgres")
    assert host.socket("tcp://127.0.0.1:5432").is_listening
    assert not host.socket("tcp://0.0.0.0:5432").is_listening, "PostgreSQL listens on every address"


def test_postgresql_is_tuned_by_sizing(host, stack):
    require_layer(stack, "postgres")
    buffers, encryption = (_sql(host, query) for query in SETTINGS)
    assert buffers == f"{stack['postgres_shared_buffers_mb']}MB"
    assert encryption == "scram-sha-256"


def test_each_service_has_its_database(host, stack):
    require_layer(stack, "postgres")
    for database, collation in stack["databases"].items():
        row = _sql(host, _owner_and_collation(database))
        assert row, f"database {database} is missing: run `commonstack deploy`"
        owner, actual_collation = row.split("|")
        assert owner == database
        if collation:
            assert actual_collation == collation, f"{database} must use {collation} collation (Synapse refuses others)"


def test_postgresql_is_sandboxed(host, stack):
    require_layer(stack, "postgres")
    assert_sandboxed(host, stack, "postgres")
