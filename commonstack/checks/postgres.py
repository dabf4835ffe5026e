"""Health checks of PostgreSQL: running, local only, tuned, one database per service."""

from __future__ import annotations

from commonstack.checks.expect import assert_sandboxed, require_layer


def _sql(host, query: str) -> str:
    return host.check_output("sudo -u postgres psql -XAtc %s", query).strip()


def test_postgresql_is_running(host, stack):
    require_layer(stack, "postgres")
    assert host.service("postgresql").is_running, "PostgreSQL is down: `journalctl -u postgresql@*`"


def test_postgresql_listens_on_localhost_only(host, stack):
    require_layer(stack, "postgres")
    assert host.socket("tcp://127.0.0.1:5432").is_listening
    assert not host.socket("tcp://0.0.0.0:5432").is_listening, "PostgreSQL listens on every address"


def test_postgresql_is_tuned_by_sizing(host, stack):
    require_layer(stack, "postgres")
    assert _sql(host, "SHOW shared_buffers") == f"{stack['postgres_shared_buffers_mb']}MB"
    assert _sql(host, "SHOW password_encryption") == "scram-sha-256"


def test_each_service_has_its_database(host, stack):
    require_layer(stack, "postgres")
    for database, collation in stack["databases"].items():
        row = _sql(host, f"SELECT pg_get_userbyid(datdba), datcollate FROM pg_database WHERE datname = '{database}'")
        assert row, f"database {database} is missing: run `commonstack deploy`"
        owner, actual_collation = row.split("|")
        assert owner == database
        if collation:
            assert actual_collation == collation, f"{database} must use {collation} collation (Synapse refuses others)"


def test_postgresql_is_sandboxed(host, stack):
    require_layer(stack, "postgres")
    assert_sandboxed(host, stack, "postgres")
