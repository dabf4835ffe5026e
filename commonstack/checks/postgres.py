"""Health checks of PostgreSQL: running, local only, tuned, one database per service."""

from __future__ import annotations

from commonstack.checks import ahead
from commonstack.checks.expect import assert_sandboxed, require_layer
from commonstack.checks.host_state import listens, listens_everywhere, unit_state

# What the checks ask PostgreSQL, in one connection (each a sudo, a psql and a server process):
# its settings, then a line per database.
QUERIES = (
    "SHOW shared_buffers",
    "SHOW password_encryption",
    "SELECT datname, pg_get_userbyid(datdba), datcollate FROM pg_database",
)
PSQL = "sudo -u postgres psql -XAt -v ON_ERROR_STOP=1" + " -c %s" * len(QUERIES)


def slowest_commands(stack: dict) -> list[tuple[str, ...]]:
    """Started at the host's first check (ahead.py)."""
    return [(PSQL, *QUERIES)] if "postgres" in stack["layers"] else []


def _answers(host) -> tuple[str, str, dict[str, tuple[str, str]]]:
    """(shared_buffers, password_encryption, {database: (owner, collation)})."""
    answer = ahead.shared(host, PSQL, *QUERIES)
    lines = answer.stdout.splitlines()
    assert answer.rc == 0 and len(lines) >= 2, (
        f"PostgreSQL does not answer ({answer.stderr.strip()[-300:] or 'no output'}): "
        "`systemctl status 'postgresql@*'` and `journalctl -u 'postgresql@*'` on the host say why"
    )
    buffers, encryption, *rows = lines
    return buffers, encryption, {name: (owner, collation) for name, owner, collation in (r.split("|") for r in rows)}


def test_postgresql_is_running(host, stack):
    require_layer(stack, "postgres")
    assert unit_state(host, stack, "postgresql").is_running, "PostgreSQL is down: `journalctl -u postgresql@*`"


def test_postgresql_listens_on_localhost_only(host, stack):
    require_layer(stack, "postgres")
    assert listens(host, "tcp", "127.0.0.1", 5432), "PostgreSQL does not listen on 127.0.0.1:5432"
    assert not listens_everywhere(host, "tcp", 5432), "PostgreSQL listens on every address"


def test_postgresql_is_tuned_by_sizing(host, stack):
    require_layer(stack, "postgres")
    buffers, encryption, _ = _answers(host)
    assert buffers == f"{stack['postgres_shared_buffers_mb']}MB"
    assert encryption == "scram-sha-256"


def test_each_service_has_its_database(host, stack):
    require_layer(stack, "postgres")
    found = _answers(host)[2]
    for database, collation in stack["databases"].items():
        assert database in found, f"database {database} is missing: run `commonstack deploy`"
        owner, actual_collation = found[database]
        assert owner == database
        if collation:
            assert actual_collation == collation, f"{database} must use {collation} collation (Synapse refuses others)"


def test_postgresql_is_sandboxed(host, stack):
    require_layer(stack, "postgres")
    assert_sandboxed(host, stack, "postgres")
