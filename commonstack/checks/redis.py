"""Health checks of Redis: running on its unix socket only, capped by sizing."""

from __future__ import annotations

from commonstack.checks.expect import assert_sandboxed, require_layer
from commonstack.checks.host_state import file_states, listeners, unit_state

SOCKET = "/run/redis/redis-server.sock"
CONFIG = "/etc/redis/redis.conf"


def test_redis_answers_on_its_socket(host, stack):
    require_layer(stack, "redis")
    assert unit_state(host, stack, "redis-server").is_running, "Redis is down: `journalctl -u redis-server`"
    assert host.check_output("redis-cli -s %s ping", SOCKET) == "PONG"


def test_redis_has_no_tcp_port(host, stack):
    require_layer(stack, "redis")
    tcp = [s for s in listeners(host) if s.protocol == "tcp" and (s.port == 6379 or s.program == "redis-server")]
    assert not tcp, "Redis listens on TCP: it should use its socket only (`port 0` in /etc/redis/redis.conf)"


def test_redis_memory_is_capped(host, stack):
    require_layer(stack, "redis")
    maxmemory = host.check_output("redis-cli -s %s config get maxmemory", SOCKET).splitlines()[-1]
    assert int(maxmemory) == stack["redis_maxmemory_mb"] * 1024 * 1024


def test_redis_is_sandboxed_and_its_config_private(host, stack):
    require_layer(stack, "redis")
    assert_sandboxed(host, stack, "redis")
    config = file_states(host, CONFIG).get(CONFIG)
    assert config, f"{CONFIG} is missing: `commonstack deploy`"
    assert not config.permissions & 0o007, (
        f"{CONFIG} is {config.permissions:04o}: readable by everyone; `commonstack deploy`"
    )
