"""The health checks of a whole group, from the same plans (real facts) its deploy used."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from commonstack.checks.probes import read_hosts_file
from commonstack.checks.runner import CheckResult, CheckRun, start_checks
from commonstack.errors import CommonstackError, ProfileError
from commonstack.inventories.groups import Group
from commonstack.inventories.targets import HostTarget
from commonstack.stacks.host_report import read_report
from commonstack.stacks.layers import check_modules, layer
from commonstack.stacks.model import StackProfile

if TYPE_CHECKING:
    from commonstack.plan import HostPlan

# A PEM file of extra roots the outside checks trust, besides the public CAs: the issuing root of
# a private ACME CA (tls.acme_ca), or of a test CA. Not in the profile: it is this machine's view.
CA_FILE_ENV = "COMMONSTACK_CHECK_CA_FILE"
# A hosts file (/etc/hosts format) the outside checks consult before DNS: split-horizon setups,
# and tests whose names are in no DNS. Also this machine's view, not the profile's.
HOSTS_FILE_ENV = "COMMONSTACK_CHECK_HOSTS_FILE"


def check_group(
    targets: list[HostTarget],
    plans: Mapping[str, HostPlan],
    secrets: Mapping[str, str],
    only: frozenset[str] = frozenset(),
    unreachable: Mapping[str, str] | None = None,
    *,
    started: CheckRun | None = None,
    exact_versions: bool = False,
    modules: tuple[str, ...] | None = None,
) -> list[CheckResult]:
    """Check every planned host; `unreachable` hosts (name: why) fail with their reason.

    `only`: just these layers' checks (as `deploy --only` deployed them); layers this version of
    the kit does not deploy yet are never checked. `started`: the run `start_group_checks` began
    (for these targets and `only`) while the plans were being made. `exact_versions`: each service
    must run the release its plan wants (an upgrade's health gate), not an older one with an
    upgrade pending. `modules`: only these check modules, on hosts expected to run every layer of
    their plan (a layer's own checks, its outside view through Caddy included).
    """
    from commonstack.checks.context import host_expectations  # the plan's code: see sized_plans

    controller = controller_view()  # a wrong path fails before any connection
    failures = [CheckResult(name, "ssh", "host can be reached", "failed", why) for name, why in (unreachable or {}).items()]
    chosen = [t for t in targets if t.name in plans]
    if not chosen:
        if started:
            started.close()
        if failures:
            return failures
        raise CommonstackError("no host to check")
    expectations = {
        t.name: host_expectations(plans[t.name], checked_layers(plans[t.name], only), exact_versions) for t in chosen
    }
    modules = modules or check_modules(only or None)
    run = started or start_checks(chosen, modules, controller, list(secrets.values()))
    return failures + run.finish(expectations)


def start_group_checks(
    targets: list[HostTarget],
    secrets: Mapping[str, str],
    only: frozenset[str] = frozenset(),
    started: CheckRun | None = None,
) -> CheckRun:
    """Open the connections and start the checks of `targets` before their plans exist (reading
    facts takes as long as pytest takes to collect the checks); `check_group(..., started=)`
    completes them. `started`: a run whose pytest started earlier still, before the profile was
    loaded (`CheckRun()`); else one starts here."""
    controller = controller_view()  # a wrong path fails before any connection opens
    return (started or CheckRun()).begin(targets, check_modules(only or None), controller, list(secrets.values()))


def sized_plans(
    group: Group, profile: StackProfile, secrets: Mapping[str, str], started: CheckRun
) -> tuple[dict[str, HostPlan], dict[str, str]]:
    """The plans of the hosts `started` reached, sized from what each said it is (as a deploy
    sizes them), and {name: why} of the others: not reached (the connection's hint), or what the
    kit cannot plan (another system, too small...)."""
    # Imported here, once the connections and pytest have started: the plan's code (rendering,
    # sizing, keys) takes as long to import as a connection takes to open.
    from commonstack.plan import UnsupportedRelease, judged, plan_measured

    plans, unusable = {}, started.unreachable()
    for name, lines in started.reports().items():
        try:
            plans[name] = plan_measured(group, profile, name, secrets, judged(read_report(lines), name))
        except (ProfileError, UnsupportedRelease) as e:  # too small, another system...: it names the host
            unusable[name] = str(e)
        except ValueError as e:  # sizing refuses what was read (no memory figure)
            unusable[name] = f"{name}: {e}"
    return plans, unusable


def checked_layers(plan: HostPlan, only: frozenset[str] = frozenset()) -> tuple[str, ...]:
    return tuple(name for name in plan.layers if layer(name).deploy and (not only or name in only))


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
        try:
            read_hosts_file(view["hosts_file"])
        except ValueError as exc:
            raise CommonstackError(f"{HOSTS_FILE_ENV}={view['hosts_file']}: {exc}") from None
    return view
