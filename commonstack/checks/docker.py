"""Health checks of the Docker engine that runs Discourse's container."""

from __future__ import annotations

from commonstack.checks.expect import require_layer
from commonstack.checks.host_state import unit_state
from commonstack.stacks.version_numbers import numeric


def test_docker_engine_runs(host, stack):
    require_layer(stack, "docker")
    assert unit_state(host, stack, "docker").is_running, "Docker is down: `journalctl -u docker` on the host"
    version = host.run("docker version --format '{{.Server.Version}}'")
    assert version.rc == 0, "the Docker daemon does not answer: `systemctl status docker`, `journalctl -u docker`"
    minimum = stack["docker_min_version"]
    assert numeric(version.stdout) >= numeric(minimum), (
        f"Docker {version.stdout.strip()} is older than {minimum}: upgrade it (apt)"
    )
