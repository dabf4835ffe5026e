"""Planning and applying a whole group: targets, facts, plans and the pyinfra runner together."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from commonstack.deploys import runner  # first: it patches gevent before pyinfra loads
from commonstack.deploys import fact_memory
from commonstack.deploys.early_batch import EarlyBatch
from commonstack.deploys.fact_memory import FactMemory
from commonstack.deploys.pyinfra_api import host
from commonstack.deploys.stack import HostOutcome, stack_operations
from commonstack.inventories.groups import Group
from commonstack.inventories.secrets import current_secrets, ensure_secrets
from commonstack.inventories.targets import host_targets
from commonstack.plan import HostPlan
from commonstack.stacks.layers import layer


@dataclass
class GroupRun:
    """One plan or deploy of a group: per-host results and the plans made from real facts."""

    results: list[runner.HostResult]
    plans: dict[str, HostPlan] = field(default_factory=dict)
    outcomes: dict[str, HostOutcome] = field(default_factory=dict)
    only: frozenset[str] = frozenset()

    @property
    def failed(self) -> list[runner.HostResult]:
        return [r for r in self.results if r.status in ("failed", "unreachable")]

    @property
    def pending(self) -> list[str]:
        return [r.name for r in self.results if r.status == "changed"]

    @property
    def unavailable(self) -> dict[str, dict[str, str]]:
        """Per host, the layers left out because their source was unreachable, and why."""
        return {name: outcome.unavailable for name, outcome in self.outcomes.items() if outcome.unavailable}

    def undeployable_layers(self) -> dict[str, list[str]]:
        """Per host, layers this version of the kit does not deploy yet."""
        return {
            name: missing
            for name, plan in self.plans.items()
            if (missing := [n for n in plan.layers if not layer(n).deploy and (not self.only or n in self.only)])
        }


class GroupConverger:
    """Plan then apply one group, with the same targets, secrets and operations both times.

    Read-only uses (plan, check) never write the group's folder: secrets not generated yet read
    as placeholders. A deploy (`generate_secrets`) generates and saves them first.
    """

    def __init__(
        self,
        group: Group,
        limit: tuple[str, ...] = (),
        on_progress: Callable[[str], None] | None = None,
        only: frozenset[str] = frozenset(),
        skip_unavailable: bool = False,
        generate_secrets: bool = False,
        purge: bool = False,
        early: dict[str, EarlyBatch] | None = None,
    ):
        self.group = group
        self.early = early or {}  # for the first plan (early_batch.py)
        self.only = only
        self.skip_unavailable = skip_unavailable
        self.purge = purge
        self.profile = group.load()
        read = ensure_secrets if generate_secrets else current_secrets
        self.secrets = read(group.secrets_file, self.profile)
        self.targets = host_targets(group, self.profile, limit)
        self.on_progress = on_progress

    def plan(self) -> GroupRun:
        early, self.early = self.early, {}
        return self._run(partial(runner.plan, early=early), self.targets)

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
            run.outcomes,
            deploy,
            self.only,
            self.skip_unavailable,
            self.purge,
        )

        def add_operations() -> None:
            # The runner may call this more than once per host (reading facts ahead): the last
            # call plans the host from its real facts, an earlier one possibly from defaults.
            run.plans.pop(host.name, None)
            run.outcomes.pop(host.name, None)
            operations()

        redact, memory = list(self.secrets.values()), self.fact_memory(deploy)
        run.results = method(targets, add_operations, self.on_progress, redact=redact, memory=memory)
        return run

    def fact_memory(self, deploy: bool = True) -> FactMemory:
        """Where each host's fact commands are remembered, for this profile and these options."""
        return fact_memory.of_group(self.group, deploy, self.only, self.purge, self.skip_unavailable)
