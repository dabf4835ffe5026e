"""The health checks of a whole group, from the same plans (real facts) its deploy used."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from commonstack.checks.context import host_expectations
from commonstack.checks.runner import CheckResult, SshHost, run_checks, select_modules
from commonstack.deploys.stack import missing_deploys
from commonstack.errors import CommonstackError
from commonstack.rendering import HostPlan

if TYPE_CHECKING:  # the runner patches gevent on import: only the CLI process may load it
    from commonstack.deploys.converge import GroupConverger

# A PEM file of extra roots the outside checks trust, besides the public CAs: the issuing root of
# a private ACME CA (tls.acme_ca), or of a test CA. Not in the profile: it is this machine's view.
CA_FILE_ENV = "COMMONSTACK_CHECK_CA_FILE"
# A hosts file (/etc/hosts format) the outside checks consult before DNS: split-horizon setups,
# and tests whose names are in no DNS. Also this machine's view, not the profile's.
HOSTS_FILE_ENV = "COMMONSTACK_CHECK_HOSTS_FILE"


def check_group(
    converger: GroupConverger,
    plans: dict[str, HostPlan] | None = None,
    only: frozenset[str] = frozenset(),
    services: tuple[str, ...] = (),
) -> list[CheckResult]:
    """Check every reachable host; hosts that cannot be planned fail with their reason.

    `only`: check just these layers (as `deploy --only` deployed); layers this version of the
    kit cannot deploy yet are never checked. `services`: just these check modules.
    """
    modules = select_modules(services)
    controller = controller_view()  # a wrong path fails before any connection
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
    expectations = {t.name: host_expectations(plans[t.name], checked_layers(plans[t.name], only)) for t in targets}
    secrets = list(converger.secrets.values())
    return failures + run_checks(hosts, expectations, modules, controller=controller, redact=secrets)


def checked_layers(plan: HostPlan, only: frozenset[str] = frozenset()) -> tuple[str, ...]:
    missing = missing_deploys(plan.layers)
    return tuple(layer for layer in plan.layers if layer not in missing and (not only or layer in only))


def controller_view() -> dict:
    """Settings of the checks run from this machine (see checks/conftest.py `controller`)."""
    view = {}
    for env, key, what in (
        (CA_FILE_ENV, "ca_file", "a PEM file of CA certificates to trust"),
        (HOSTS_FILE_ENV, "hosts_file", "a hosts file: ADDRESS NAME... per line"),
    ):
        path = os.environ.get(env)
        if not path:
            continue
        resolved = Path(path).expanduser().resolve()  # the checks run in another working directory
        if not resolved.is_file():
            raise CommonstackError(f"{env}={path}: no such file ({what})")
        view[key] = str(resolved)
    if "hosts_file" in view:
        from commonstack.checks.outside import read_hosts_file

        try:
            read_hosts_file(view["hosts_file"])
        except ValueError as exc:
            raise CommonstackError(f"{HOSTS_FILE_ENV}={view['hosts_file']}: {exc}") from None
    return view
