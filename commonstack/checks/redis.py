"""Health checks of Redis: running on its unix socket only, capped by sizing."""

from __future__ import annotations

from commonstack.checks.expect import assert_sandboxed, require_layer

SOCKET = "/run/redis/redis-server.sock"


def test_redis_answers_on_its_socket(host, stack):
    require_layer(stack, "redis")
    assert host.service("redis-server").is_running, "Redis is down: `journalctl -u redis-server`"
    assert host.check_output("redis-cli -s %s ping", SOCKET) == "PONG"


def test_redis_has_no_tcp_port(host, stack):
    require_layer(stack, "redis")
    assert not host.socket("tcp://6379").is_listening, "Redis listens on TCP: it should use its socket only"


def test_redis_memory_is_capped(host, stack):
    require_layer(stack, "redis")
    maxmemory = host.check_output("redis-cli -s %s config get maxmemory", SOCKET).splitlines()[-1]
    assert int(maxmemory) == stack["redis_maxmemory_mb"] * 1024 * 1024


def test_redis_is_sandboxed_and_its_config_private(host, stack):
    require_layer(stack, "redis")
    assert_sandboxed(host, stack, "redis")
    config = host.file("/etc/redis/redis.conf")
    assert not config.mode & 0o007, f"/etc/redis/redis.conf is {config.mode:04o}: readable by everyone; `commonstack deploy`"
