"""A whole stack on one host: every layer's deploy, in the registry's order, and the removal of
the layers the profile no longer puts on the host."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib import import_module

from pyinfra import host
from pyinfra.operations import apt, files, postgres, server, systemd

from commonstack.deploys.base import APT_CACHE_SECONDS
from commonstack.deploys.configs import changed
from commonstack.deploys.facts import FileNames, planned_here
from commonstack.deploys.identity import operation_identity
from commonstack.deploys.postgres import AS_POSTGRES
from commonstack.deploys.preflight import SourceUnavailable
from commonstack.deploys.updates import RESTART_REPLACED, WITH_SECURITY_UPDATES
from commonstack.deploys.upgrade import UpgradeRecords, installed_versions
from commonstack.errors import CommonstackError
from commonstack.inventories.groups import Group
from commonstack.plan import HostPlan
from commonstack.stacks.layers import LAYERS, Layer, layer
from commonstack.stacks.model import StackProfile
from commonstack.stacks.paths import STATE_DIR

# A layer the kit deployed on a host leaves a record here, so that turning it off later touches
# only what the kit put there (never a service the host's owner runs for something else).
LAYER_RECORDS = f"{STATE_DIR}/layers"


def deploy_function(reference: str) -> Callable[[HostPlan], object]:
    """The function a registry entry names ("module:function" in commonstack.deploys)."""
    module, function = reference.split(":")
    return getattr(import_module(f"commonstack.deploys.{module}"), function)


@dataclass
class HostOutcome:
    """What deploy_host decided for a host, besides its operations."""

    unavailable: dict[str, str] = field(default_factory=dict)  # layer -> why its source is unreachable
    turned_off: list[str] = field(default_factory=list)  # layers deployed here before, now off
    # layer -> (the release running, the one the profile wants): left for `commonstack upgrade`
    pending: dict[str, tuple[str, str]] = field(default_factory=dict)
    # layer -> what an interrupted upgrade did: the host is not deployed until it is resumed
    unfinished: dict[str, str] = field(default_factory=dict)


class UpgradeUnfinished(CommonstackError):
    """An upgrade of a layer on the host was interrupted: it is resumed or rolled back first."""


def held_releases(plan: HostPlan, chosen: list[str], outcome: HostOutcome) -> HostPlan:
    """The plan with the releases running on the host: a deploy never moves a layer to another
    release (that is `commonstack upgrade`'s, with its backup, health gate and rollback). A layer
    whose upgrade was interrupted stops the deploy of the host before any change."""
    records = host.get_fact(UpgradeRecords)
    for name, record in records.unfinished.items():
        outcome.unfinished[name] = (
            f"the upgrade of {name} from {record.from_version} to {record.to_version} stopped after "
            f"'{record.last_step}'"
        )
    if outcome.unfinished:
        raise UpgradeUnfinished(
            f"{host.name}: {'; '.join(outcome.unfinished.values())}: `commonstack upgrade` resumes or rolls "
            "it back (`commonstack deploy` offers to)"
        )
    installed = {name: running for name, running in installed_versions(chosen).items() if running}
    for name, running in installed.items():
        if running != plan.wanted_version(name):
            outcome.pending[name] = (running, plan.wanted_version(name))
    return replace(plan, installed=installed)


def deploy_host(
    plan: HostPlan,
    only: frozenset[str] = frozenset(),
    skip_unavailable: bool = False,
    purge: bool = False,
    outcome: HostOutcome | None = None,
) -> HostOutcome:
    """Add the operations of every layer the host needs (or of `only` those), in registry order,
    and turn off the layers the kit deployed here before that the profile no longer wants.

    Every preflight runs before the first operation is added, so a refusal changes nothing on
    the host. With skip_unavailable (`try`), a layer whose source is unreachable is left out
    instead. Turned-off layers keep their data unless `purge`. A layer keeps the release it runs
    (`outcome.pending` says where the profile wants another); an interrupted upgrade refuses the
    host (UpgradeUnfinished, `outcome.unfinished` says which).
    """
    outcome = outcome if outcome is not None else HostOutcome()
    chosen = [name for name in plan.layers if layer(name).deploy and (not only or name in only)]
    plan = held_releases(plan, chosen, outcome)
    for name in chosen:
        if layer(name).preflight:
            try:
                deploy_function(layer(name).preflight)(plan)
            except SourceUnavailable as refusal:
                if not skip_unavailable:
                    raise
                outcome.unavailable[name] = refusal.reason
    deployed = [name for name in chosen if name not in outcome.unavailable]

    first_start = {}  # what a service must find when its package starts it (Layer.first_start)
    for index, item in enumerate(LAYERS):
        if item.name in deployed and item.first_start:
            with operation_identity(2 * len(LAYERS) + index):  # beside the layers' and the turned-off ones'
                first_start[item.name] = deploy_function(item.first_start)(plan)
    apt.update(name="Refresh the package lists (when older than two days)", cache_time=APT_CACHE_SECONDS)
    # With the base layer (it owns security updates), the pending ones join the transaction, read
    # when apt runs, after the lists' refresh: they then cost no apt run of their own (base's still
    # installs them when no package is missing).
    updating = "base" in deployed
    installed = apt.packages(
        name="Install the packages of every layer" + (" and the pending security updates" if updating else "")
        + " (one transaction)",
        packages=plan.packages_of(tuple(deployed)),
        no_recommends=True,
        extra_install_args=WITH_SECURITY_UPDATES if updating else None,
    )
    if updating:  # needrestart's apt hook cannot restart them when the transaction installs needrestart
        server.shell(
            name="Restart the services still running libraries the transaction replaced",
            commands=[RESTART_REPLACED],
            _if=changed([installed]),
        )
    recorded = host.get_fact(FileNames, path=LAYER_RECORDS)
    for index, item in enumerate(LAYERS):
        if item.name in deployed:
            with operation_identity(index):
                if item.name in first_start:
                    deploy_function(item.deploy)(plan, first_start=first_start[item.name])
                else:
                    deploy_function(item.deploy)(plan)
                files.file(
                    name=f"Record that {item.name} is deployed here",
                    path=f"{LAYER_RECORDS}/{item.name}",
                    mode="0600",
                    create_remote_dir=True,
                )
        elif item.name in recorded and item.name not in plan.layers and (not only or item.name in only):
            outcome.turned_off.append(item.name)
            with operation_identity(len(LAYERS) + index):
                turn_off(plan, item, purge)
    return outcome


def turn_off(plan: HostPlan, item: Layer, purge: bool = False) -> None:
    """Stop and disable what `item` runs; with `purge`, delete its data and databases too.

    Its Caddy site and firewall ports are gone already: they are rendered from the layers the
    host keeps. Its config files and packages stay (harmless without a running service).
    """
    if item.remove:
        deploy_function(item.remove)(plan)
    for unit in plan.units_of(item.name):
        systemd.service(
            name=f"Turn off {item.name}: stop and disable {unit}", service=unit, running=False, enabled=False
        )
    if not purge:
        return
    if "postgres" in plan.layers:  # else its own purge deletes every database with the cluster
        for database in item.databases:
            postgres.database(
                name=f"Purge {item.name}: delete database {database.name}",
                database=database.name,
                present=False,
                **AS_POSTGRES,
            )
            postgres.role(
                name=f"Purge {item.name}: delete role {database.name}", role=database.name, present=False, **AS_POSTGRES
            )
    for path in item.data:
        files.directory(name=f"Purge {item.name}: delete {path}", path=path, present=False)
    files.file(name=f"Purge {item.name}: forget it was deployed", path=f"{LAYER_RECORDS}/{item.name}", present=False)


def stack_operations(
    group: Group,
    profile: StackProfile,
    secrets: Mapping[str, str],
    plans: dict[str, HostPlan],
    outcomes: dict[str, HostOutcome],
    deploy: bool = True,
    only: frozenset[str] = frozenset(),
    skip_unavailable: bool = False,
    purge: bool = False,
) -> Callable[[], None]:
    """The runner's `add_operations`: read the host's facts, plan it, add its operations.

    Each host's plan and outcome are kept in `plans` and `outcomes` so the caller can report
    what was sized, left out and turned off; with deploy=False only the planning happens (what
    the health checks need to know).
    """

    def add_operations() -> None:
        plan = planned_here(group, profile, secrets)
        plans[host.name] = plan
        if deploy:
            outcomes[host.name] = HostOutcome()
            deploy_host(plan, only, skip_unavailable, purge, outcomes[host.name])

    return add_operations
