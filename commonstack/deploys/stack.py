"""A whole stack on one host: the layer deploys in order, as pyinfra operations."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from pyinfra import host

from commonstack.deploys.base import base
from commonstack.deploys.caddy import caddy
from commonstack.deploys.coturn import coturn
from commonstack.deploys.discourse import discourse, discourse_preflight
from commonstack.deploys.element import element, element_preflight
from commonstack.deploys.facts import gather_release
from commonstack.deploys.identity import operation_identity
from commonstack.deploys.nextcloud import nextcloud, nextcloud_preflight
from commonstack.deploys.preflight import SourceUnavailable
from commonstack.deploys.postgres import postgresql
from commonstack.deploys.redis import redis
from commonstack.deploys.synapse import synapse, synapse_preflight
from commonstack.inventories.groups import Group
from commonstack.rendering import LAYERS, HostPlan
from commonstack.stacks.model import StackProfile
from commonstack.stacks.plan import plan_one

DEPLOYS: dict[str, Callable[[HostPlan], None]] = {
    "base": base,
    "postgres": postgresql,
    "redis": redis,
    "caddy": caddy,
    "synapse": synapse,
    "coturn": coturn,
    "element": element,
    "nextcloud": nextcloud,
    "discourse": discourse,
}


def missing_deploys(layers: tuple[str, ...]) -> list[str]:
    """Layers of a plan that this version of the kit cannot deploy yet."""
    return [layer for layer in layers if layer not in DEPLOYS]


# Layers that check the host (sources reachable, resources) before anything is changed.
PREFLIGHTS: dict[str, Callable[[HostPlan], None]] = {
    "synapse": synapse_preflight,
    "element": element_preflight,
    "nextcloud": nextcloud_preflight,
    "discourse": discourse_preflight,
}


def deploy_host(
    plan: HostPlan, only: frozenset[str] = frozenset(), skip_unavailable: bool = False
) -> dict[str, str]:
    """Add the operations of every layer the host needs (or of `only` those), in LAYERS order.

    Every preflight runs before the first operation is added, so a refusal changes nothing on
    the host. With skip_unavailable (`try`), a layer whose source is unreachable is left out
    instead; returns {layer: reason} of the layers left out.
    """
    wanted = [layer for layer in LAYERS if layer in plan.layers and layer in DEPLOYS and (not only or layer in only)]
    skipped = {}
    for layer in wanted:
        try:
            PREFLIGHTS.get(layer, lambda plan: None)(plan)
        except SourceUnavailable as refusal:
            if not skip_unavailable:
                raise
            skipped[layer] = refusal.reason
    for layer in wanted:
        if layer not in skipped:
            with operation_identity(LAYERS.index(layer)):
                DEPLOYS[layer](plan)
    return skipped


def stack_operations(
    group: Group,
    profile: StackProfile,
    secrets: Mapping[str, str],
    plans: dict[str, HostPlan],
    deploy: bool = True,
    only: frozenset[str] = frozenset(),
    skipped: dict[str, dict[str, str]] | None = None,
) -> Callable[[], None]:
    """The runner's `add_operations`: read the host's facts, plan it, add its operations.

    Each host's plan is kept in `plans` so the caller can report what was sized and skipped;
    with deploy=False only that happens (what the health checks need to know). When `skipped`
    is given, layers whose source is unreachable are left out and recorded there per host.
    """
    hosts = {h.name: h for h in profile.hosts}

    def add_operations() -> None:
        wanted = hosts[host.name]
        release = gather_release()
        if wanted.memory_mb and wanted.memory_mb < release.facts.memory_mb:
            # The profile may reserve RAM for other uses: size for its figure, not the machine's.
            release = replace(release, facts=replace(release.facts, memory_mb=wanted.memory_mb))
        plan = plan_one(group, profile, wanted, secrets, release)
        plans[host.name] = plan
        if deploy:
            left_out = deploy_host(plan, only, skip_unavailable=skipped is not None)
            if skipped is not None and left_out:
                skipped[host.name] = left_out

    return add_operations
