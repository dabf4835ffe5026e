"""Restoring a snapshot onto a host of the group, so that a failed restore leaves it as it was.

In order, for one host (`restore_host`):

1. Read the snapshot's manifest; refuse, before any change, a snapshot this kit cannot restore
   (data of newer service versions, a newer Debian) or one without the layers asked for.
2. Take a `pre-restore` snapshot of the current data (not on a drill's throwaway host).
3. Fetch the snapshot into the host's restore folder (restic verifies every piece it reads),
   after checking there is room for it beside the current data: a damaged or unreachable
   snapshot stops the restore here.
4. Deploy the layers to restore (the versions the kit installs: those of the manifest, or newer
   ones that upgrade the data themselves, e.g. Synapse's schema migrations).
5. Swap in: each database into a NEW database, renamed in place of the old one (kept as
   NAME_before_restore); each folder moved in, the old one kept beside it.
6. Run the restored layers' health checks and count what came back against the manifest's
   counts. Only when both pass is the data from before deleted; otherwise it is put back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from commonstack.backups.remote import HostCommandFailed, HostShell
from commonstack.backups.snapshots import Snapshot, choose, host_snapshots, refusal
from commonstack.checks.group import check_group
from commonstack.checks.runner import CheckResult
from commonstack.errors import CommonstackError
from commonstack.inventories.groups import Group
from commonstack.stacks.layers import LAYER_NAMES, layer
from commonstack.stacks.paths import BACKUP_SCRIPT

Say = Callable[[str], None]


class RestoreFailed(CommonstackError):
    """The restore could not finish; the host has what it had before."""

    exit_code = 1


@dataclass
class RestoreReport:
    host: str
    snapshot: Snapshot
    layers: list[str]
    checks: list[CheckResult] = field(default_factory=list)
    counts: list[str] = field(default_factory=list)  # "synapse.users 3 (3 at the backup)"

    @property
    def passed_checks(self) -> list[CheckResult]:
        return [r for r in self.checks if r.outcome == "passed"]

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [r for r in self.checks if r.outcome == "failed"]


def restorable_layers(snapshot: Snapshot, host_layers: tuple[str, ...], only: tuple[str, ...]) -> list[str]:
    """The snapshot's layers a restore puts back on this host (`only`: just these)."""
    candidates = [name for name in LAYER_NAMES if name in snapshot.layers and layer(name).backup
                  and layer(name).backup.restorable]  # fmt: skip
    for name in only:
        if name not in candidates:
            why = "is not in the snapshot" if name not in snapshot.layers else "keeps what the deploy renders"
            raise CommonstackError(f"--only {name}: nothing of it can be restored from {snapshot.short_id} ({name} {why})")
    chosen = [name for name in candidates if not only or name in only]
    missing = [name for name in chosen if name not in host_layers]
    if missing:
        raise CommonstackError(
            f"snapshot {snapshot.short_id} holds {', '.join(missing)}, which the profile does not place on host "
            f"{snapshot.host}: enable it in stack.yaml (or restore with --only)"
        )
    return chosen


def compare_counts(snapshot: Snapshot, restored: dict) -> tuple[list[str], list[str]]:
    """(lines, problems): what came back against what the manifest counted before the backup.

    A database has at least the rows counted before its dump (the dump came after); a folder that
    held files holds files again.
    """
    lines, problems = [], []
    for database, entry in snapshot.manifest.get("databases", {}).items():
        if database not in restored.get("databases", {}):
            continue
        for table, recorded in entry.get("counts", {}).items():
            found = restored["databases"][database].get(table)
            lines.append(f"{database}.{table} {found} ({recorded} at the backup)")
            if found is None or found < recorded:
                problems.append(f"{database}.{table} has {found} rows, the backup counted {recorded}")
    for path, recorded in snapshot.manifest.get("files", {}).items():
        if path not in restored.get("files", {}):
            continue
        found = restored["files"][path]
        lines.append(f"{path} {found} files ({recorded} at the backup)")
        if recorded and not found:
            problems.append(f"{path} is empty, it held {recorded} files at the backup")
    return lines, problems


def restore_host(
    group: Group,
    host: str,
    reference: str | None = None,
    only: tuple[str, ...] = (),
    say: Say = print,
    progress: Say | None = None,
    safety_snapshot: bool = True,
) -> RestoreReport:
    """Restore snapshot `reference` (default: the latest routine one) of `host` onto it."""
    from commonstack.deploys.converge import GroupConverger  # pyinfra patches gevent: only when it runs

    converger = GroupConverger(group, (host,), on_progress=progress, generate_secrets=True)
    sized = converger.sized()
    if sized.failed:
        raise RestoreFailed(f"{host}: {sized.failed[0].error}")
    plan = sized.plans[host]
    with HostShell(converger.targets) as shell:
        snapshot = choose(host_snapshots(shell, host), reference, host, group.name)
        why_not = refusal(snapshot, plan.release.codename)
        if why_not:
            raise CommonstackError(why_not)
        layers = restorable_layers(snapshot, plan.layers, only)
        say(f"{host}: restoring snapshot {snapshot.short_id} of {snapshot.time:%Y-%m-%d %H:%M} UTC "
            f"({snapshot.age()} old): {', '.join(layers)}")  # fmt: skip

        # 2. a snapshot of what is there now, 3. fetch (a damaged or unreachable snapshot stops
        # the restore here, before anything else changes), 4. the versions, 5. swap in
        if safety_snapshot:
            say(f"{host}: saving the current data first (a pre-restore snapshot)")
            try:
                shell.script(host, "run", "--tag", "pre-restore", on_line=progress)
            except HostCommandFailed as exc:
                raise RestoreFailed(f"{exc}; nothing was restored") from None
        say(f"{host}: fetching snapshot {snapshot.short_id} ({snapshot.size / 1e6:.0f} MB)")
        try:
            shell.script(host, "stage", snapshot.id, *layers, on_line=progress)
        except HostCommandFailed as exc:
            _rollback(shell, host)
            raise RestoreFailed(f"{exc}; nothing was restored") from None
        needed = set(layers) | {"base", "backup"}  # base: what every host has (and its checks need)
        needed |= {required for name in layers for required in layer(name).requires}
        say(f"{host}: deploying {', '.join(sorted(needed))} (the versions the snapshot needs)")
        problem = _deploy(group, host, frozenset(needed), progress)
        if problem:
            _rollback(shell, host)
            raise RestoreFailed(f"{host}: cannot deploy before restoring: {problem}; nothing was restored")
        try:
            shell.script(host, "swap", *layers, on_line=progress)
        except HostCommandFailed as exc:
            _rollback(shell, host)
            raise RestoreFailed(f"{exc}; the data from before the restore is back") from None

        # 6. checks and counts decide
        report = RestoreReport(host, snapshot, layers)
        restored = json.loads(shell.script(host, "counts", *layers).stdout)
        report.counts, problems = compare_counts(snapshot, restored)
        report.checks = check_group(converger.targets, {host: plan}, converger.secrets, frozenset(layers))
        problems += [f"{r.layer}: {r.check}: {r.message}" for r in report.failed_checks]
        if problems:
            _rollback(shell, host)
            raise RestoreFailed(
                f"{host}: the restored data did not pass: {problems[0]}"
                f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; the data from before the "
                "restore is back"
            )
        shell.script(host, "commit")
        return report


def _deploy(group: Group, host: str, layers: frozenset[str], progress: Say | None) -> str | None:
    """Converge these layers of the host (as `deploy --only`); the reason it failed, or None."""
    from commonstack.deploys.converge import GroupConverger  # pyinfra patches gevent: only when it runs

    converger = GroupConverger(group, (host,), on_progress=progress, only=layers, generate_secrets=True)
    planned = converger.plan()
    if planned.failed:
        return planned.failed[0].error
    if planned.pending:
        applied = converger.apply(planned.pending)
        if applied.failed:
            return applied.failed[0].error
    return None


def _rollback(shell: HostShell, host: str) -> None:
    done = shell.run(host, f"{BACKUP_SCRIPT} rollback")
    if done.returncode != 0:
        raise RestoreFailed(
            f"{host}: the restore failed AND putting the data back failed ({done.reason}): nothing was deleted; "
            "the data from before waits in *.commonstack-before-restore folders and *_before_restore databases"
        )
