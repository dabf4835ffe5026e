"""The health checks of a whole group, from the same plans (real facts) its deploy used."""

from __future__ import annotations

from commonstack.checks.context import host_expectations
from commonstack.checks.runner import CheckResult, SshHost, run_checks
from commonstack.deploys.converge import GroupConverger
from commonstack.errors import CommonstackError
from commonstack.rendering import HostPlan


def check_group(converger: GroupConverger, plans: dict[str, HostPlan] | None = None) -> list[CheckResult]:
    """Check every reachable host; hosts that cannot be planned fail with their reason."""
    failures = []
    if plans is None:
        sized = converger.sized()
        plans = sized.plans
        failures = [
            CheckResult(r.name, "ssh", "host can be reached", "failed", r.error or r.status) for r in sized.failed
        ]
    targets = [t for t in converger.targets if t.name in plans]
    if not targets:
        if failures:
            return failures
        raise CommonstackError("no host to check")
    hosts = [SshHost(t.name, t.address, t.port, t.user, t.key_path, t.known_hosts) for t in targets]
    expectations = {t.name: host_expectations(plans[t.name]) for t in targets}
    return failures + run_checks(hosts, expectations)
