"""Running `commonstack upgrade`: survey the group's hosts, refuse what must not go ahead, then,
one layer of one host at a time:

    prepare     the lock, the record, the pre-upgrade backup, the new code beside the old
    apply       the downtime: stop, dump, switch, migrate, start (the layer's own steps)
    gate        the layer's health checks, expecting the target release, retried for slow starts
    close       on success: recorded, the lock given back, expired leftovers removed
    rollback    on a failed apply or gate: old code, database and config back, then gated again;
                if that gate fails too: stop, delete nothing, say exactly how to restore

Each phase is one run of the pyinfra runner against one host; the host records every step, so a
run that is killed or loses its connection is resumed (or its rollback finished) by the next
`upgrade` or `deploy`. Debian's updates (the base layer) have no rollback: apt cannot go back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from commonstack.deploys import runner  # first: it patches gevent before pyinfra loads
from commonstack.checks.group import check_group
from commonstack.checks.runner import CheckResult
from commonstack.deploys.converge import GroupConverger
from commonstack.deploys.upgrade import (
    BACKUP_TAG,
    HostState,
    HostSurvey,
    UpgradeContext,
    BACKED_UP,
    begin,
    close,
    expired_removed,
    held,
    pre_upgrade_backup,
    state_operations,
    steps_of,
    survey_operations,
    unlocked,
)
from commonstack.errors import CommonstackError
from commonstack.inventories.groups import Group
from commonstack.plan import HostPlan
from commonstack.stacks.layers import LAYERS, layer
from commonstack.stacks.paths import UPGRADES_DIR
from commonstack.upgrades.preflight import (
    Task,
    blocking_failures,
    holding,
    host_tasks,
    owner_name,
    targets,
    upgradable_layers,
)

GRACE_DAYS = 7  # old code and dumps stay this long after an upgrade ended
GATE_PAUSE_SECONDS = 10  # between two attempts of a health gate
REBOOT_WAIT_SECONDS = 600
APPLY_STEPS = {  # the steps after which the layer has been touched: an interruption is resumed, not dropped
    "stopped", "dumped", "switched", "started", "maintenance-on", "migrated", "maintenance-off",
    "checked-out", "rebuilt", "updated", "restarted", "rebooted",
}  # fmt: skip


@dataclass
class Verdict:
    """How one task ended, for the volunteer."""

    task: Task
    outcome: str  # upgraded | updated | rolled back | rollback failed | not upgraded | refused | up to date
    detail: str = ""
    seconds: float = 0.0
    downtime: float | None = None
    manual: list[str] = field(default_factory=list)  # what to do by hand when the rollback failed
    down: str | None = None  # the layer does not serve (Nextcloud left in maintenance mode...)
    healthy: bool = True  # its checks pass (Debian's updates have no rollback: they may not)

    @property
    def ok(self) -> bool:
        return self.outcome in ("upgraded", "updated", "up to date") and self.healthy and not self.down


def shorter(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Upgrader:
    """One `commonstack upgrade` run over a group (or some of its hosts and layers)."""

    def __init__(
        self,
        group: Group,
        limit: tuple[str, ...] = (),
        only: frozenset[str] = frozenset(),
        to: str | None = None,
        force: bool = False,
        reboot: bool = False,
        on_progress: Callable[[str], None] | None = None,
    ):
        self.layers = upgradable_layers(only)  # a request no host could do fails before anything is read
        self.wanted = targets(group.load(), self.layers, to)
        self.converger = GroupConverger(group, limit)  # read-only: the secrets must exist already
        self.group, self.profile, self.secrets = group, self.converger.profile, self.converger.secrets
        self.force, self.reboot = force, reboot
        self.owner = owner_name(datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.say = on_progress or (lambda message: None)
        self.surveys: dict[str, HostSurvey] = {}
        self._started = 0.0
        self._down_since: float | None = None  # the layer stopped serving (the apply began)
        self._up_at: float | None = None  # its health gate passed again

    # --- before any change -------------------------------------------------------------------

    def survey(self) -> dict[str, str]:
        """Read every host (read-only); returns the hosts that could not be read, and why."""
        results = runner.plan(
            self.converger.targets,
            survey_operations(self.group, self.profile, self.secrets, self.wanted, self.surveys),
            redact=list(self.secrets.values()),
        )
        return {r.name: r.error or r.status for r in results if r.status in ("failed", "unreachable")}

    def tasks(self) -> list[Task]:
        """What each surveyed host would do, with every refusal found so far."""
        found = []
        for target in self.converger.targets:
            if target.name in self.surveys:
                found += host_tasks(
                    self.surveys[target.name], self.layers, self.wanted, self.owner, target.address, self.reboot
                )
        return found

    def refuse_red_checks(self, tasks: list[Task]) -> None:
        """The stack's health checks, now, on the hosts with work to do: a failing one refuses the
        host's upgrades (without --force). Resumed upgrades go ahead: they make things whole."""
        hosts = sorted({t.host for t in tasks if t.ready and t.resume is None})
        if not hosts or self.force:
            return
        self.say(f"health checks of {', '.join(hosts)} before any change")
        results = check_group(
            [t for t in self.converger.targets if t.name in hosts],
            {name: self.surveys[name].plan for name in hosts},
            self.secrets,
        )
        for name in hosts:
            failing = blocking_failures(r for r in results if r.host == name)
            if not failing:
                continue
            listed = "; ".join(f"{r.layer}: {r.check} ({r.message})" for r in failing[:3])
            more = f" and {len(failing) - 3} more" if len(failing) > 3 else ""
            for task in tasks:
                if task.host == name and task.ready and task.resume is None:
                    task.refusals.append(
                        f"the stack's checks fail now ({listed}{more}): fix that first (`commonstack check "
                        f"{self.group.name}`), or upgrade anyway with --force"
                    )

    # --- one task ----------------------------------------------------------------------------

    def run(self, task: Task) -> Verdict:
        """Upgrade (or resume, or roll back) one layer of one host; never raises for the host's faults."""
        self._started, self._down_since, self._up_at = time.monotonic(), None, None
        survey = self.surveys[task.host]
        steps = steps_of(task.layer)
        record = task.resume
        ctx = UpgradeContext(
            layer=task.layer,
            id=record.id if record else f"{task.layer}-{int(time.time())}",
            from_version=task.from_version,
            to_version=task.to_version,
            plan=survey.plan,
            owner=self.owner,
            done=record.steps if record else (),
            has_backup=survey.has_backup,
        )
        if record and record.outcome:  # it ended, only its records were not moved yet
            return self._closed(task, ctx, record.outcome)
        if record and any(step.startswith("rollback") for step in record.steps):
            return self._rolled_back(task, ctx, steps, f"resuming the rollback that stopped after '{record.last_step}'")
        if record and any(step in APPLY_STEPS for step in record.steps):
            self._down_since = time.monotonic()  # it was down when the earlier run stopped

        prepared = self._phase(task, ctx, lambda c: self._prepare(c, task, steps))
        if prepared.status == "failed":
            return self._not_prepared(task, ctx, prepared.error)
        ctx = self._fresh(task, ctx)
        if self._down_since is None and not task.debian:  # Debian's updates restart services one by one
            self._down_since = time.monotonic()
        applied = self._phase(task, ctx, steps.apply)
        if applied.status == "failed":
            if task.debian:  # apt cannot go back: say what failed, keep the record
                return self._verdict(task, "not upgraded", f"the updates failed: {applied.error}; run "
                                     f"`commonstack upgrade {self.group.name} --only base` again", self._state(task))  # fmt: skip
            return self._rolled_back(task, ctx, steps, f"a step failed: {applied.error}")
        if task.debian:
            return self._debian_gate(task, ctx, steps)
        failing = self._gate(task, task.to_version)
        if failing:
            return self._rolled_back(task, ctx, steps, f"the health gate failed: {failing}")
        return self._finish(task, self._fresh(task, ctx), "upgraded")

    def _prepare(self, ctx: UpgradeContext, task: Task, steps) -> None:
        begin(ctx, steps.leftovers(ctx))
        pre_upgrade_backup(ctx)
        steps.prepare(ctx)

    def _not_prepared(self, task: Task, ctx: UpgradeContext, error: str | None) -> Verdict:
        """Prepare failed. Before any apply step nothing of the running layer changed: recorded as
        abandoned. A resumed upgrade that had begun to apply stays recorded, to be resumed again."""
        state = self._state(task)
        record = state.records.unfinished.get(task.layer) if state else None
        if record and any(step in APPLY_STEPS for step in record.steps):
            return self._verdict(task, "not upgraded", f"{error}; the upgrade stays stopped after '{record.last_step}': "
                                 f"run `commonstack upgrade {self.group.name} --host {task.host}` again to resume it or "
                                 "roll it back", state)  # fmt: skip
        if record and ctx.has_backup and BACKED_UP not in record.steps:
            error = f"the pre-upgrade backup failed, so the upgrade stopped there: {error}"
        if record:
            self._phase(task, replace(ctx, done=record.steps), lambda c: close(c, "abandoned"))
        else:  # it may have got as far as taking the lock: let it go, without waiting for it again
            self._phase(task, ctx, unlocked, lock=False)
        return self._verdict(task, "not upgraded", f"{error}; nothing of the running {task.layer} was changed", state)

    def _gate(self, task: Task, version: str) -> str | None:
        """The layer's checks, expecting `version`, until they pass or its patience ends; None when
        they pass, else what failed."""
        survey = self.surveys[task.host]
        plan = replace(survey.plan, profile=holding(survey.plan.profile, task.layer, version))
        deadline = time.monotonic() + layer(task.layer).upgrade.gate_seconds
        while True:
            self.say(f"{self._clock()} health gate: {task.layer}'s checks, expecting {version}")
            failing = self._checks(task, plan)
            if not failing:
                self._up_at = time.monotonic()
                return None
            if time.monotonic() >= deadline:
                return "; ".join(f"{r.check} ({shorter(r.message)})" for r in failing[:3])
            self.say(f"{self._clock()}   {len(failing)} failing ({failing[0].check}): again in {GATE_PAUSE_SECONDS} s")
            time.sleep(GATE_PAUSE_SECONDS)

    def _checks(self, task: Task, plan: HostPlan, ignore=frozenset()) -> list:
        target = [t for t in self.converger.targets if t.name == task.host]
        try:
            results = check_group(target, {task.host: plan}, self.secrets, exact_versions=True,
                                  modules=layer(task.layer).checks)  # fmt: skip
        except CommonstackError as exc:  # the checks could not run at all: the gate cannot pass
            return [CheckResult(task.host, task.layer, "the checks can run", "failed", str(exc))]
        return [r for r in results if r.outcome == "failed" and r.check not in ignore]

    def _rolled_back(self, task: Task, ctx: UpgradeContext, steps, reason: str) -> Verdict:
        self.say(f"{self._clock()} rolling back {task.layer} to {task.from_version}: {reason}")
        ctx = self._fresh(task, ctx)
        if self._down_since is None:
            self._down_since = time.monotonic()

        def rollback(c: UpgradeContext) -> None:
            c.step("rollback-begun", "true", f"Begin the rollback to {task.from_version}")
            steps.rollback(c)

        result = self._phase(task, ctx, rollback)
        failing = result.error if result.status == "failed" else self._gate(task, task.from_version)
        if failing is None:
            return self._finish(task, self._fresh(task, ctx), "rolled back", reason)
        ctx = self._fresh(task, ctx)
        self._phase(task, ctx, lambda c: (c.step("rollback-failed", "true", "Record that the rollback failed"),
                                           unlocked(c)))  # fmt: skip
        verdict = self._verdict(task, "rollback failed", f"{reason}; then the rollback failed too: {failing}",
                                self._state(task))  # fmt: skip
        verdict.manual = self._manual(task, ctx, steps)
        return verdict

    def _finish(self, task: Task, ctx: UpgradeContext, outcome: str, detail: str = "", healthy: bool = True) -> Verdict:
        self._closed(task, ctx, {"upgraded": "finished", "updated": "finished", "rolled back": "rolled-back"}[outcome])
        verdict = self._verdict(task, outcome, detail, self._state(task))
        verdict.healthy = healthy
        return verdict

    def _closed(self, task: Task, ctx: UpgradeContext, outcome: str) -> Verdict:
        protected = tuple(item.upgrade.running for item in LAYERS if item.upgrade and item.upgrade.running)

        def ops(c: UpgradeContext) -> None:
            if outcome == "finished":  # first: it runs under the lock that close lets go
                expired_removed(name=f"Remove what upgrades that ended over {GRACE_DAYS} days ago left behind",
                                grace_seconds=GRACE_DAYS * 86400, protected=protected)  # fmt: skip
            close(c, outcome)

        self._phase(task, ctx, ops)
        return self._verdict(task, {"finished": "upgraded", "rolled-back": "rolled back"}.get(outcome, "not upgraded"))

    def _debian_gate(self, task: Task, ctx: UpgradeContext, steps) -> Verdict:
        state = self._state(task)
        needs_reboot = state is not None and self._reboot_required(task)
        rebooted = False
        if needs_reboot and self.reboot:
            before = state.boot
            self._phase(task, self._fresh(task, ctx), steps.reboot)
            rebooted = self._wait_for_boot(task, before)
        ignore = frozenset() if rebooted or not needs_reboot else frozenset({"no reboot is pending"})
        failing = self._checks(task, self.surveys[task.host].plan, ignore)
        detail = ""
        if needs_reboot and not rebooted:
            detail = f"a reboot is needed for the updates to take effect: `commonstack upgrade {self.group.name} " \
                     f"--host {task.host} --only base --reboot` when the group can spare a few minutes"  # fmt: skip
        if failing:
            detail = "; ".join(filter(None, [detail, "checks failing after the updates: "
                                             + "; ".join(f"{r.check} ({r.message})" for r in failing[:3])]))  # fmt: skip
        if not failing:
            self._up_at = time.monotonic()
        return self._finish(task, self._fresh(task, ctx), "updated", detail, healthy=not failing)

    def _reboot_required(self, task: Task) -> bool:
        surveys: dict[str, HostSurvey] = {}
        target = [t for t in self.converger.targets if t.name == task.host]
        runner.plan(target, survey_operations(self.group, self.profile, self.secrets, {}, surveys))
        return task.host in surveys and surveys[task.host].runtimes.get("reboot") == "yes"

    def _wait_for_boot(self, task: Task, before: str) -> bool:
        deadline = time.monotonic() + REBOOT_WAIT_SECONDS
        time.sleep(10)
        while time.monotonic() < deadline:
            state = self._state(task)
            if state is not None and state.boot and state.boot != before:
                self.say(f"{self._clock()} {task.host} is back after its reboot")
                return True
            time.sleep(5)
        return False

    # --- plumbing ----------------------------------------------------------------------------

    def _phase(self, task: Task, ctx: UpgradeContext, add: Callable[[UpgradeContext], object], lock: bool = True):
        """One run of `add`'s operations on the task's host, under the maintenance lock."""
        target = [t for t in self.converger.targets if t.name == task.host]

        def operations() -> None:
            if lock:
                held(ctx, task.stale_lock)
            add(ctx)

        (result,) = runner.apply(target, operations, self._progress, redact=list(self.secrets.values()))
        if result.status != "unchanged":  # the host's next plan finds its fact commands anew
            self.converger.fact_memory().forget(task.host)
        return result

    def _state(self, task: Task) -> HostState | None:
        states: dict[str, HostState] = {}
        target = [t for t in self.converger.targets if t.name == task.host]
        runner.plan(target, state_operations(task.layer, states))
        return states.get(task.host)

    def _fresh(self, task: Task, ctx: UpgradeContext) -> UpgradeContext:
        """The context with the steps the host's journal records now."""
        state = self._state(task)
        record = state.records.unfinished.get(task.layer) if state else None
        return replace(ctx, done=record.steps if record else ctx.done)

    def _verdict(self, task: Task, outcome: str, detail: str = "", state: HostState | None = None) -> Verdict:
        downtime = None if self._down_since is None else (self._up_at or time.monotonic()) - self._down_since
        return Verdict(task, outcome, detail, time.monotonic() - self._started, downtime,
                       down=state.down if state else None)  # fmt: skip

    def _clock(self) -> str:
        elapsed = time.monotonic() - self._started
        down = ""
        if self._down_since is not None and self._up_at is None:
            down = f", down {time.monotonic() - self._down_since:.0f} s"
        return f"[{elapsed:4.0f} s{down}]"

    def _progress(self, message: str) -> None:
        if message.startswith("operation: "):
            self.say(f"{self._clock()} {message.removeprefix('operation: ')}")

    def _manual(self, task: Task, ctx: UpgradeContext, steps) -> list[str]:
        target = next(t for t in self.converger.targets if t.name == task.host)
        lines = [
            f"Nothing was deleted. What the upgrade saved is on {task.host} in {UPGRADES_DIR}/{task.layer}/.",
            f"Try the rollback again: commonstack upgrade {self.group.name} --host {task.host} --only {task.layer}",
            f"Or by hand, as root on {task.host} (ssh {target.user}@{target.address}):",
        ]
        lines += [f"  {command}" for command in steps.manual_rollback(ctx)]
        if ctx.has_backup:
            lines.append(f"The pre-upgrade backup is in the restic repository, tagged {BACKUP_TAG}.")
        return lines
