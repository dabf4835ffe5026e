"""Planning and applying a whole group: targets, facts, plans and the pyinfra runner together."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from commonstack.deploys import runner  # first: it patches gevent before pyinfra loads
from commonstack.deploys.stack import missing_deploys, stack_operations
from commonstack.inventories.groups import Group
from commonstack.inventories.secrets import ensure_secrets
from commonstack.inventories.targets import host_targets
from commonstack.rendering import HostPlan


@dataclass
class GroupRun:
    """One plan or deploy of a group: per-host results and the plans made from real facts."""

    results: list[runner.HostResult]
    plans: dict[str, HostPlan] = field(default_factory=dict)
    only: frozenset[str] = frozenset()
    unavailable: dict[str, dict[str, str]] = field(default_factory=dict)  # host -> {layer: why}

    @property
    def failed(self) -> list[runner.HostResult]:
        return [r for r in self.results if r.status in ("failed", "unreachable")]

    @property
    def pending(self) -> list[str]:
        return [r.name for r in self.results if r.status == "changed"]

    def skipped_layers(self) -> dict[str, list[str]]:
        """Per host, layers this version of the kit does not deploy yet."""
        return {
            name: missing
            for name, plan in self.plans.items()
            if (missing := [m for m in missing_deploys(plan.layers) if not self.only or m in self.only])
        }


class GroupConverger:
    """Plan then apply one group, with the same targets, secrets and operations both times."""

    def __init__(
        self,
        group: Group,
        limit: tuple[str, ...] = (),
        on_progress: Callable[[str], None] | None = None,
        only: frozenset[str] = frozenset(),
        skip_unavailable: bool = False,
    ):
        self.group = group
        self.only = only
        self.skip_unavailable = skip_unavailable
        self.profile = group.load()
        self.secrets = ensure_secrets(group.secrets_file, self.profile)
        self.targets = host_targets(group, self.profile, limit)
        self.on_progress = on_progress

    def plan(self) -> GroupRun:
        return self._run(runner.plan, self.targets)

    def apply(self, hosts: list[str] | None = None) -> GroupRun:
        chosen = [t for t in self.targets if hosts is None or t.name in hosts]
        return self._run(runner.apply, chosen)

    def sized(self) -> GroupRun:
        """Only read each host's facts and plan it: no operation is added."""
        return self._run(runner.plan, self.targets, deploy=False)

    def _run(self, method, targets, deploy: bool = True) -> GroupRun:
        run = GroupRun(results=[], only=self.only)
        operations = stack_operations(
            self.group,
            self.profile,
            self.secrets,
            run.plans,
            deploy,
            self.only,
            run.unavailable if self.skip_unavailable else None,
        )
        run.results = method(targets, operations, self.on_progress, redact=list(self.secrets.values()))
        return run
