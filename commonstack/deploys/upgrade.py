"""The host side of `commonstack upgrade` that every layer shares: what the host records of an
upgrade, the lock, the journal of steps, the databases dumped before and restored by a
rollback, the pre-upgrade backup, and the removal of what finished upgrades left behind once
their grace period is over. Each layer's own steps are in deploys/LAYER_upgrade.py;
commonstack/upgrades.py drives them and decides between them.

What a host keeps (stacks/paths.py)::

    /var/lib/commonstack/upgrades/LAYER/            an upgrade that has not finished
        plan.json                                   what it does: layer, from, to, id, started
        journal                                     "STEP EPOCH" per step done, in order
        DATABASE.dump, saved.tar                    pg_dump -Fc and config, taken before any change
        leftovers                                   what to remove after the grace period, by outcome
    /var/lib/commonstack/upgrades/history/ID/       finished (or rolled back), same files

An upgrade holds the host's maintenance lock (stacks/paths.py MAINTENANCE_LOCK, the flock a
backup and a restore take too) from its first step to its last: a process of the scope unit
MAINTENANCE_HOLDER keeps it between the SSH commands, and the unit's description names the run.
No scheduled backup runs during an upgrade, and the pre-upgrade backup runs inside it
(COMMONSTACK_LOCK_HELD=1). A reboot frees the lock, and so does HOLD_SECONDS; the next phase
takes it again.

Every step is one shell command, run only while the lock is held, that appends its name to the
journal when it succeeded. A step the journal records
is not run again, and each command can run again after an interruption: it finds what an
earlier, interrupted run of it already did.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import import_module
from types import ModuleType

from pyinfra import host
from pyinfra.api import FactBase, OperationError, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import Directory

from commonstack.deploys.facts import planned_here
from commonstack.plan import HostPlan
from commonstack.stacks.layers import layer
from commonstack.stacks.paths import (
    BACKUP_SCRIPT,
    MAINTENANCE_HOLDER,
    MAINTENANCE_LOCK,
    UPGRADE_HISTORY,
    UPGRADES_DIR,
)

LOCK_WAIT_SECONDS = 900  # a running backup finishes first
# The longest an upgrade's holder keeps the maintenance lock: a controller that vanished blocks the
# scheduled backups for at most this long (its unfinished record waits for the next upgrade or
# deploy). Each phase takes the lock again, and no phase comes near it.
HOLD_SECONDS = 6 * 3600
# Sets $holder to the run whose upgrade holds the maintenance lock; false when none does.
HOLDER_DESCRIPTION = (
    f"holder=$(systemctl is-active -q {MAINTENANCE_HOLDER} && systemctl show -P Description {MAINTENANCE_HOLDER}) "
    "&& [ -n \"$holder\" ]"
)
OUTCOMES = ("finished", "rolled-back", "abandoned")  # how an upgrade ends; without one it is unfinished
BACKUP_TAG = "pre-upgrade"  # kept apart from the backups' retention policy
BACKED_UP = "backed-up"  # the journal's step of the pre-upgrade snapshot

# --- what the host records -------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One upgrade of one layer, as the host recorded it."""

    folder: str  # relative to UPGRADES_DIR: LAYER (unfinished) or history/ID
    plan: dict
    steps: tuple[str, ...] = ()  # the journal's steps, in order
    times: dict[str, int] = field(default_factory=dict)  # step -> when it was recorded (epoch)

    @property
    def layer(self) -> str:
        return self.plan["layer"]

    @property
    def id(self) -> str:
        return self.plan["id"]

    @property
    def from_version(self) -> str | None:
        return self.plan.get("from")

    @property
    def to_version(self) -> str | None:
        return self.plan.get("to")

    @property
    def outcome(self) -> str | None:
        return next((step for step in reversed(self.steps) if step in OUTCOMES), None)

    @property
    def last_step(self) -> str | None:
        return self.steps[-1] if self.steps else None


@dataclass(frozen=True)
class UpgradesOnHost:
    unfinished: dict[str, Record] = field(default_factory=dict)  # by layer
    lock: str | None = None  # the run holding the maintenance lock for an upgrade
    history: tuple[Record, ...] = ()


class UpgradeRecords(FactBase[UpgradesOnHost]):
    """The host's upgrade records: the unfinished ones (by layer), the upgrade holding the
    maintenance lock, the history."""

    def command(self) -> str:
        return (
            f"{HOLDER_DESCRIPTION} && printf '@lock %s\\n' \"$holder\"; "
            f"d={UPGRADES_DIR}; if [ -d $d ]; then "
            "for f in $d/*/plan.json $d/history/*/plan.json; do "
            '[ -f "$f" ] || continue; dir=${f%/plan.json}; '
            "printf '@record %s\\n' \"${dir#$d/}\"; cat \"$f\"; echo; "
            'if [ -f "$dir/journal" ]; then sed \'s/^/@step /\' "$dir/journal"; fi; '
            "done; fi; true"
        )

    def default(self) -> UpgradesOnHost:
        return UpgradesOnHost()

    def process(self, output) -> UpgradesOnHost:
        lock, records, current = None, [], None
        for line in (line.rstrip("\n") for line in output):
            if line.startswith("@lock "):
                lock = line[6:].strip() or None
            elif line.startswith("@record "):
                current = {"folder": line[8:].strip(), "plan": None, "steps": [], "times": {}}
                records.append(current)
            elif current is not None and line.startswith("@step "):
                parts = line[6:].split()
                if parts:
                    current["steps"].append(parts[0])
                    if len(parts) > 1 and parts[1].isdigit():
                        current["times"][parts[0]] = int(parts[1])
            elif current is not None and current["plan"] is None and line.strip():
                try:
                    current["plan"] = json.loads(line)
                except ValueError:
                    current["plan"] = {}
        parsed = [
            Record(r["folder"], r["plan"], tuple(r["steps"]), r["times"])
            for r in records
            if r["plan"] and "layer" in r["plan"] and "id" in r["plan"]
        ]
        unfinished = {r.layer: r for r in parsed if not r.folder.startswith("history/")}
        history = tuple(sorted((r for r in parsed if r.folder.startswith("history/")), key=lambda r: r.id))
        return UpgradesOnHost(unfinished, lock, history)


# --- what the preflight reads ----------------------------------------------------------------


@dataclass(frozen=True)
class Space:
    device: str  # the filesystem, so that two paths on one share its free space
    free_mb: int


class FreeSpace(FactBase[dict[str, Space]]):
    """Free space where each path is (or would be: its nearest existing parent)."""

    def command(self, paths: tuple[str, ...]) -> str:
        quoted = " ".join(shlex.quote(p) for p in paths)
        return (
            f"for p in {quoted}; do q=$p; while [ ! -e \"$q\" ]; do q=$(dirname \"$q\"); done; "
            "printf '%s %s %s\\n' \"$p\" \"$(stat -c %d \"$q\")\" "
            "\"$(df -Pk \"$q\" | awk 'NR==2 {print $4}')\"; done"
        )

    def default(self) -> dict[str, Space]:
        return {}

    def process(self, output) -> dict[str, Space]:
        found = {}
        for line in output:
            parts = line.split()
            if len(parts) == 3 and parts[2].isdigit():
                found[parts[0]] = Space(parts[1], int(parts[2]) // 1024)
        return found


class DatabaseSizesMb(FactBase[dict[str, int]]):
    """The size of every PostgreSQL database ({} when there is no PostgreSQL)."""

    def command(self) -> str:
        query = "SELECT datname, pg_database_size(datname) FROM pg_database"
        return f"cd / && runuser -u postgres -- psql -XAtq -F ' ' -c {shlex.quote(query)} 2>/dev/null || true"

    def default(self) -> dict[str, int]:
        return {}

    def process(self, output) -> dict[str, int]:
        sizes = {}
        for line in output:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                sizes[parts[0]] = -(-int(parts[1]) // (1024 * 1024))
        return sizes


class Runtimes(FactBase[dict[str, str]]):
    """What an upgrade's target needs of the host: Python's and the PostgreSQL server's versions,
    the backup layer's script, needrestart, a pending reboot, the boot's id."""

    def command(self) -> str:
        return (
            "printf 'python=%s\\n' \"$(python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])' 2>/dev/null)\"; "
            "printf 'postgresql=%s\\n' \"$(cd / && runuser -u postgres -- psql -XAtq -c 'SHOW server_version' "
            "2>/dev/null | cut -d' ' -f1)\"; "
            f"printf 'backup=%s\\n' \"$(test -x {BACKUP_SCRIPT} && echo yes)\"; "
            "printf 'needrestart=%s\\n' \"$(command -v needrestart)\"; "
            "printf 'reboot=%s\\n' \"$(test -e /run/reboot-required && echo yes)\"; "
            "printf 'boot=%s\\n' \"$(cat /proc/sys/kernel/random/boot_id)\""
        )

    def default(self) -> dict[str, str]:
        return {}

    def process(self, output) -> dict[str, str]:
        return dict(line.strip().split("=", 1) for line in output if "=" in line)


class DebianUpdates(FactBase[list[str]]):
    """Packages an `apt-get upgrade` within the host's release would change (from the package lists
    the host has; unattended-upgrades refreshes them daily), "(security)" after security updates."""

    def command(self) -> str:
        return (
            "LC_ALL=C apt-get -s -o Debug::NoLocking=1 upgrade --with-new-pkgs 2>/dev/null "
            "| awk '/^Inst / {print $2 ($0 ~ /-security/ ? \" (security)\" : \"\")}'; true"
        )

    def default(self) -> list[str]:
        return []

    def process(self, output) -> list[str]:
        return [line.strip() for line in output if line.strip()]


class UnitActive(FactBase[bool]):
    """Whether a systemd unit is active."""

    def command(self, unit: str) -> str:
        return f"systemctl is-active -q {shlex.quote(unit)} && echo yes || echo no"

    def default(self) -> bool:
        return False

    def process(self, output) -> bool:
        return "".join(output).strip() == "yes"


@dataclass(frozen=True)
class HostSurvey:
    """What `commonstack upgrade` knows of a host before it changes anything."""

    plan: HostPlan
    installed: dict[str, str | None]  # per upgradable layer on the host: the release running
    records: UpgradesOnHost
    space: dict[str, Space]
    database_mb: dict[str, int]
    runtimes: dict[str, str]
    debian_updates: list[str]
    source_problems: dict[str, str | None] = field(default_factory=dict)  # per layer: why its target cannot be fetched
    down: dict[str, str] = field(default_factory=dict)  # per layer: why it does not serve (maintenance mode...)

    @property
    def has_backup(self) -> bool:
        """The group backs this host up: an upgrade's first step is a pre-upgrade snapshot."""
        return "backup" in self.plan.layers

    @property
    def backup_missing(self) -> bool:
        """Backups are enabled, but the backup layer's script is not on the host yet."""
        return self.has_backup and self.runtimes.get("backup") != "yes"


def space_paths(plan: HostPlan) -> tuple[str, ...]:
    """Where an upgrade of the host's layers writes: its records (dumps) and each layer's code."""
    paths = [UPGRADES_DIR]
    for name in plan.layers:
        upgrade = layer(name).upgrade
        if upgrade and upgrade.running:
            paths.append(upgrade.running.rsplit("/", 1)[0] or "/")
    return tuple(dict.fromkeys(paths))


def steps_of(layer_name: str) -> ModuleType:
    """The module of a layer's upgrade steps (its registry entry's `upgrade.steps`)."""
    return import_module(f"commonstack.deploys.{layer(layer_name).upgrade.steps}")


def installed_versions(layer_names: Iterable[str]) -> dict[str, str | None]:
    """The release each of these layers runs on the current host (None: not installed), for the
    layers that have releases of their own."""
    return {
        name: steps_of(name).installed_version()
        for name in layer_names
        if (upgrade := layer(name).upgrade) and upgrade.pins
    }


def survey_host(plan: HostPlan, targets: dict[str, str] | None = None) -> HostSurvey:
    """Read everything the upgrade's preflight and --list need (read-only facts); `targets`: the
    release each layer would move to, whose source is checked (can the host get it?)."""
    installed = installed_versions(plan.layers)
    problems = {
        name: steps_of(name).source_problem(plan, target)
        for name, target in (targets or {}).items()
        if name in installed and installed[name] and installed[name] != target
    }
    return HostSurvey(
        plan=plan,
        installed=installed,
        records=host.get_fact(UpgradeRecords),
        space=host.get_fact(FreeSpace, paths=space_paths(plan)),
        database_mb=host.get_fact(DatabaseSizesMb),
        runtimes=host.get_fact(Runtimes),
        debian_updates=host.get_fact(DebianUpdates),
        source_problems=problems,
        down={name: why for name, running in installed.items() if running and (why := _down(name))},
    )


def _down(layer_name: str) -> str | None:
    steps = steps_of(layer_name)
    return steps.down_reason() if hasattr(steps, "down_reason") else None


# --- the steps -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpgradeContext:
    """One upgrade of one layer on the current host, as the steps need it."""

    layer: str
    id: str  # "LAYER-EPOCH": names its history folder and the databases a rollback sets aside
    from_version: str | None
    to_version: str | None
    plan: HostPlan
    owner: str  # who holds the lock: this controller's run
    done: tuple[str, ...] = ()  # steps the journal already records
    has_backup: bool = False  # the group backs the host up: a pre-upgrade snapshot comes first

    @property
    def folder(self) -> str:
        return f"{UPGRADES_DIR}/{self.layer}"

    @property
    def journal(self) -> str:
        return f"{self.folder}/journal"

    def step(self, step: str, command: str, name: str) -> OperationMeta | None:
        """A recorded step (see journaled). One the journal recorded before this phase is left out,
        so that the progress shows only what runs (the operation would say it has nothing to do)."""
        if step in self.done:
            return None
        return journaled(name=name, journal=self.journal, step=step, command=command)


def in_step(command: str, journal: str | None = None, step: str | None = None) -> str:
    """`command`, only while an upgrade holds the maintenance lock (upgrade_lock); recorded in
    `journal` as `step` once it succeeded."""
    recorded = f" && echo \"{step} $(date +%s)\" >> {journal}" if journal else ""
    return (
        f"umask 077; systemctl is-active -q {MAINTENANCE_HOLDER} || "
        f"{{ echo 'no upgrade holds {MAINTENANCE_LOCK} (a reboot frees it): run the upgrade again' >&2; exit 75; }}; "
        f"( set -e; {command} ){recorded}"
    )


class JournalSteps(FactBase[list[str]]):
    """The steps an upgrade's journal records, in order ([] when there is no journal)."""

    def command(self, journal: str) -> str:
        return f"sed 's/ .*//' {shlex.quote(journal)} 2>/dev/null; true"

    def default(self) -> list[str]:
        return []

    def process(self, output) -> list[str]:
        return [line.strip() for line in output if line.strip()]


class LockHolder(FactBase[str | None]):
    """The run whose upgrade holds the maintenance lock (None: no upgrade does)."""

    def command(self) -> str:
        return f"{HOLDER_DESCRIPTION} && printf '%s\\n' \"$holder\"; true"

    def process(self, output) -> str | None:
        lines = [line.strip() for line in output if line.strip()]
        return lines[0] if lines else None


class ExpiredUpgrades(FactBase[list[str]]):
    """The history folders of upgrades that ended more than `grace_seconds` ago and still hold
    what they left behind."""

    def command(self, grace_seconds: int) -> str:
        return (
            f"now=$(date +%s); for entry in {UPGRADE_HISTORY}/*; do [ -f \"$entry/journal\" ] || continue; "
            "grep -q '^cleaned ' \"$entry/journal\" && continue; "
            f"at=$(grep -E '^({'|'.join(OUTCOMES)}) ' \"$entry/journal\" | tail -n 1 | cut -d' ' -f2); "
            f"[ -n \"$at\" ] && [ $((now - at)) -ge {int(grace_seconds)} ] && echo \"$entry\"; done; true"
        )

    def default(self) -> list[str]:
        return []

    def process(self, output) -> list[str]:
        return [line.strip() for line in output if line.strip()]


@operation()
def journaled(journal: str, step: str, command: str):
    """Run one step of an upgrade, under the maintenance lock, unless its journal records it;
    record it there once it succeeded.

    + journal: the upgrade's journal file
    + step: the step's name in the journal
    + command: shell (run with `set -e`) that can run again after an interruption

    **Example:**

    .. code:: python

        journaled(name="Stop Synapse", journal="/var/lib/commonstack/upgrades/synapse/journal",
                  step="stopped", command="systemctl stop matrix-synapse")
    """
    if step in host.get_fact(JournalSteps, journal=journal):
        host.noop(f"{step}: recorded in {journal}")
        return
    yield in_step(command, journal, step)


class UpgradeLockHeld(OperationError):
    """Another upgrade holds the host's maintenance lock."""


@operation()
def upgrade_lock(owner: str, stale: str | None = None):
    """Hold the host's maintenance lock for `owner`'s upgrade until upgrade_unlocked (or a reboot):
    wait for a running backup or restore to finish, then leave a process of the scope unit
    MAINTENANCE_HOLDER holding the flock, described as `owner`. The lock of `stale` (an upgrade
    known to have ended) is taken over; another upgrade's fails the operation, changing nothing.

    **Example:**

    .. code:: python

        upgrade_lock(name="Take the maintenance lock", owner="laptop pid 4242 since 2026-11-30T10:00:00Z")
    """
    holder = host.get_fact(LockHolder)
    if holder == owner:
        host.noop("this upgrade holds the maintenance lock")
        return
    if holder is not None and holder != stale:
        raise UpgradeLockHeld(f"another upgrade holds the maintenance lock: {holder}")
    if holder is not None:
        yield f"systemctl stop {MAINTENANCE_HOLDER}"
    # The sleep inherits descriptor 9, and with it the flock, which outlives this command. A second
    # upgrade that found the lock free too waits here, and then finds it held (LockHolder).
    yield (
        f"exec 9>{MAINTENANCE_LOCK} && flock -w {LOCK_WAIT_SECONDS} 9 || "
        f"{{ echo '{MAINTENANCE_LOCK} stayed taken for {LOCK_WAIT_SECONDS} s (a backup or a restore): "
        "try again when it is done' >&2; exit 75; }; "
        f"systemctl reset-failed {MAINTENANCE_HOLDER} 2>/dev/null; "
        f"systemd-run --scope --quiet --unit={MAINTENANCE_HOLDER} --description={shlex.quote(owner)} "
        f"sleep {HOLD_SECONDS} </dev/null >/dev/null 2>&1 & "
        f"for _ in $(seq 50); do systemctl is-active -q {MAINTENANCE_HOLDER} && exit 0; sleep 0.1; done; "
        f"echo 'could not start {MAINTENANCE_HOLDER} to hold {MAINTENANCE_LOCK}' >&2; exit 1"
    )


@operation()
def upgrade_unlocked(owner: str):
    """Let the maintenance lock go, if `owner`'s upgrade holds it."""
    if host.get_fact(LockHolder) != owner:
        host.noop("this upgrade does not hold the maintenance lock")
        return
    yield f"systemctl stop {MAINTENANCE_HOLDER}"


@operation()
def records_archived(folder: str, history: str):
    """Move a finished upgrade's records from `folder` to `history` (its folder in history/)."""
    if not host.get_fact(Directory, path=folder):
        host.noop(f"{folder} is archived")
        return
    yield f"mkdir -p -m 0700 {UPGRADE_HISTORY} && mv -T {folder} {history}"


@operation()
def expired_removed(grace_seconds: int, protected: tuple[str, ...]):
    """Remove what upgrades left behind (old or failed code, dumps, databases set aside) once
    `grace_seconds` have passed since they ended; never a path in `protected` (the code that runs,
    links resolved). Each history folder keeps its plan and journal, and records the removal.

    **Example:**

    .. code:: python

        expired_removed(name="Remove old code", grace_seconds=7 * 86400, protected=("/opt/synapse/venv",))
    """
    expired = host.get_fact(ExpiredUpgrades, grace_seconds=grace_seconds)
    if not expired:
        host.noop(f"no upgrade ended more than {grace_seconds // 86400} days ago left anything")
        return
    keep = " ".join(shlex.quote(p) for p in protected)
    for entry in expired:
        quoted = shlex.quote(entry)
        yield in_step(
            f"protected=''; for p in {keep}; do protected=\"$protected $(readlink -f \"$p\" || echo \"$p\")\"; done; "
            f"outcome=$(grep -E '^({'|'.join(OUTCOMES)}) ' {quoted}/journal | tail -n 1 | cut -d' ' -f1); "
            f"if [ -f {quoted}/leftovers ]; then while read -r kind path; do [ -n \"$path\" ] || continue; "
            "if [ \"$kind\" = \"databases.$outcome\" ]; then (cd / && runuser -u postgres -- dropdb --if-exists \"$path\"); "
            "continue; fi; [ \"$kind\" = \"leftovers.$outcome\" ] || continue; "
            "real=$(readlink -f \"$path\" || echo \"$path\"); "
            "case \" $protected \" in *\" $real \"*) continue ;; esac; rm -rf -- \"$path\"; "
            f"done < {quoted}/leftovers; fi; "
            f"rm -f {quoted}/*.dump {quoted}/saved.tar {quoted}/*.tar.gz; echo \"cleaned $(date +%s)\" >> {quoted}/journal"
        )


def held(ctx: UpgradeContext, stale_owner: str | None = None) -> None:
    """The maintenance lock, held for this upgrade (every phase starts with it)."""
    upgrade_lock(name="Hold the maintenance lock: no backup or restore meanwhile", owner=ctx.owner, stale=stale_owner)


def begin(ctx: UpgradeContext, leftovers: dict[str, Iterable[str]]) -> None:
    """For a new upgrade, write what it is and what it will leave behind.

    `leftovers`: per outcome ("finished", "rolled-back", "abandoned"), the paths to remove once
    the grace period is over ("databases.rolled-back": the databases a rollback sets aside).
    """
    if "begun" in ctx.done:
        return
    plan = {"layer": ctx.layer, "id": ctx.id, "from": ctx.from_version, "to": ctx.to_version,
            "owner": ctx.owner}  # fmt: skip
    listed = "".join(f"{kind} {path}\n" for kind, paths in leftovers.items() for path in paths)
    ctx.step(
        "begun",
        f"mkdir -p -m 0700 {ctx.folder} && printf '%s\\n' {shlex.quote(json.dumps(plan))} > {ctx.folder}/plan.json "
        f"&& printf '%s' {shlex.quote(listed)} > {ctx.folder}/leftovers",
        f"Record the upgrade of {ctx.layer} in {ctx.folder}",
    )


def pre_upgrade_backup(ctx: UpgradeContext) -> None:
    """A snapshot by the backup layer's script, tagged pre-upgrade (kept apart from its retention),
    before anything changes, when the group backs the host up. The upgrade holds the maintenance
    lock already: the script must not wait for it. If it fails, the upgrade stops there."""
    if ctx.has_backup:
        # On failure its "error: ..." line is said last: the one line the upgrade's verdict quotes.
        ctx.step(
            BACKED_UP,
            f"said=$(mktemp) && if COMMONSTACK_LOCK_HELD=1 {BACKUP_SCRIPT} run --tag {BACKUP_TAG} 2>\"$said\"; "
            "then rm -f \"$said\"; else cat \"$said\" >&2; grep '^error: ' \"$said\" | tail -n 1 >&2; "
            "rm -f \"$said\"; exit 1; fi",
            f"Back up the host first ({BACKUP_SCRIPT} run --tag {BACKUP_TAG})",
        )


def dumped(ctx: UpgradeContext) -> None:
    """`pg_dump -Fc` of the layer's databases and a copy of its config, into the upgrade's folder:
    what a rollback restores. Taken with the layer stopped, so nothing written later is lost."""
    upgrade = layer(ctx.layer).upgrade
    commands = [
        f"cd / && runuser -u postgres -- pg_dump -Fc -d {db} > {ctx.folder}/{db}.dump.part "
        f"&& mv {ctx.folder}/{db}.dump.part {ctx.folder}/{db}.dump"
        for db in upgrade.dumps
    ]
    if upgrade.saved:
        paths = " ".join(shlex.quote(p.lstrip("/")) for p in upgrade.saved)
        commands.append(f"tar -C / -cpf {ctx.folder}/saved.tar.part {paths} && mv {ctx.folder}/saved.tar.part "
                        f"{ctx.folder}/saved.tar")  # fmt: skip
    what = " and ".join(filter(None, [", ".join(f"database {db}" for db in upgrade.dumps),
                                      ", ".join(upgrade.saved)]))  # fmt: skip
    ctx.step("dumped", " && ".join(commands) or "true", f"Save {what} (pg_dump -Fc, kept for a rollback)")


def aside_database(database: str, upgrade_id: str) -> str:
    """The name a rollback gives the database it replaces (kept until the grace period ends)."""
    return f"{database}_before_rollback_{upgrade_id.rsplit('-', 1)[-1]}"


def databases_restored(ctx: UpgradeContext) -> None:
    """Each dumped database restored into a new, empty database, then renamed in; the database it
    replaces is renamed aside, not dropped. Run again, it finishes what an interrupted run began."""
    upgrade = layer(ctx.layer).upgrade
    collations = {d.name: d.collation for d in layer(ctx.layer).databases}
    commands = []
    for db in upgrade.dumps:
        scratch, aside = f"{db}_commonstack_rollback", aside_database(db, ctx.id)
        locale = f" --locale={collations[db]}" if collations.get(db) else ""
        exists = "cd / && [ \"$(runuser -u postgres -- psql -XAtq -c \"SELECT 1 FROM pg_database WHERE datname = '{}'\")\" = 1 ]"
        psql = "cd / && runuser -u postgres -- psql -Xq -v ON_ERROR_STOP=1 -c"
        commands.append(
            f"if [ -f {ctx.folder}/{db}.dump ]; then "
            f"if [ ! -e {ctx.folder}/{db}.restored ]; then "
            f"if {exists.format(scratch)}; then (cd / && runuser -u postgres -- dropdb {scratch}); fi; "
            f"(cd / && runuser -u postgres -- createdb -O {db} -E UTF8{locale} -T template0 {scratch}); "
            f"(cd / && runuser -u postgres -- pg_restore --exit-on-error -d {scratch}) < {ctx.folder}/{db}.dump; "
            f"touch {ctx.folder}/{db}.restored; fi; "
            f"if {exists.format(scratch)}; then "
            f"{psql} \"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'\" >/dev/null; "
            f"if {exists.format(db)}; then {psql} 'ALTER DATABASE {db} RENAME TO {aside}'; fi; "
            f"{psql} 'ALTER DATABASE {scratch} RENAME TO {db}'; fi; fi"
        )
    ctx.step("restored", "; ".join(commands) or "true",
             f"Restore the database{'s' if len(upgrade.dumps) > 1 else ''} from before the upgrade "
             f"({', '.join(upgrade.dumps) or 'none'})")  # fmt: skip


def config_restored(ctx: UpgradeContext) -> None:
    """The saved config put back (files the upgrade changed get their old content again)."""
    saved = f"{ctx.folder}/saved.tar"
    ctx.step("config-restored", f"if [ -f {saved} ]; then tar -C / -xpf {saved}; fi",
             f"Put back {', '.join(layer(ctx.layer).upgrade.saved)} from before the upgrade")  # fmt: skip


def manual_restore(ctx: UpgradeContext) -> list[str]:
    """The shell a volunteer types to put the dumped databases and the saved config back by hand."""
    upgrade = layer(ctx.layer).upgrade
    collations = {d.name: d.collation for d in layer(ctx.layer).databases}
    as_postgres = "cd / && runuser -u postgres --"
    lines = []
    for db in upgrade.dumps:
        locale = f" --locale={collations[db]}" if collations.get(db) else ""
        lines += [
            f"{as_postgres} createdb -O {db} -E UTF8{locale} -T template0 {db}_restored",
            f"{as_postgres} pg_restore --exit-on-error -d {db}_restored < {ctx.folder}/{db}.dump",
            f"{as_postgres} psql -c 'ALTER DATABASE {db} RENAME TO {db}_failed' "
            f"-c 'ALTER DATABASE {db}_restored RENAME TO {db}'",
        ]
    if upgrade.saved:
        lines.append(f"tar -C / -xpf {ctx.folder}/saved.tar")
    return lines


def close(ctx: UpgradeContext, outcome: str) -> None:
    """Record how the upgrade ended, move its records to history/ and let the lock go."""
    ctx.step(outcome, "true", f"Record that the upgrade of {ctx.layer} {outcome.replace('-', ' ')}")
    history = f"{UPGRADE_HISTORY}/{ctx.id}"
    records_archived(name=f"Move the upgrade's records to {history}", folder=ctx.folder, history=history)
    unlocked(ctx)


def unlocked(ctx: UpgradeContext) -> None:
    upgrade_unlocked(name="Let the maintenance lock go", owner=ctx.owner)


# --- what the upgrader reads between its steps ------------------------------------------------


def survey_operations(
    group, profile, secrets, targets: dict[str, str], surveys: dict[str, HostSurvey]
) -> Callable[[], None]:
    """The runner's `add_operations` of a survey: plan the host from its facts and read what the
    upgrade needs to know; no operation is added."""
    def add_operations() -> None:
        plan = planned_here(group, profile, secrets)
        surveys[host.name] = survey_host(plan, {name: v for name, v in targets.items() if name in plan.layers})

    return add_operations


@dataclass(frozen=True)
class HostState:
    """What the upgrader reads between two phases: the records, and whether the layer is down."""

    records: UpgradesOnHost
    boot: str  # the boot's id (a reboot changes it)
    down: str | None  # why the upgraded layer does not serve (None: it serves, as far as that goes)


def state_operations(layer_name: str, states: dict[str, HostState]) -> Callable[[], None]:
    def add_operations() -> None:
        states[host.name] = HostState(
            records=host.get_fact(UpgradeRecords),
            boot=host.get_fact(Runtimes).get("boot", ""),
            down=_down(layer_name) if layer(layer_name).upgrade.pins else None,
        )

    return add_operations
