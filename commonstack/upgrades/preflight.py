"""What `commonstack upgrade` would do on a host, decided from its survey before any change: per
layer, the release it runs and the one to reach, and every reason to refuse (the health checks'
verdict is added by the upgrader). Pure: no host is contacted here.

The rules, from upstream (DESIGN.md, "Keeping a stack alive"):

- releases only go forward (database migrations do): no downgrade, ever;
- the profile is the record of what runs: `--to` may stop short of the release the profile
  wants (a step of the way), never go past it;
- Nextcloud moves one major at a time, and leaves a major from its newest known patch;
- the target must suit the host: Synapse's Python and PostgreSQL, Nextcloud's PHP, a pinned
  wheel for the architecture, a source the host can fetch;
- there must be room for the dump and the new code beside the old;
- an upgrade that did not finish is resumed (or rolled back) before anything else on the host.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from commonstack.deploys.upgrade import BACKED_UP, HostSurvey, Record
from commonstack.errors import CommonstackError
from commonstack.plan import wanted_version
from commonstack.stacks.layers import LAYERS, layer
from commonstack.stacks.model import StackProfile
from commonstack.stacks.paths import BACKUP_SCRIPT, MAINTENANCE_HOLDER, UPGRADES_DIR
from commonstack.stacks.version_numbers import major, numeric
from commonstack.stacks.versions import versions

MARGIN_MB = 256  # what an upgrade leaves free at least: a full disk breaks more than the upgrade
DEBIAN_DOWNLOADS_MB = 512  # apt's downloads of a point release, in /var/cache/apt
# A pending reboot is advice, not a broken stack: it never stops an upgrade (`--only base --reboot`).
NOT_BLOCKING = {"no reboot is pending"}


class BadUpgradeRequest(CommonstackError):
    """The command asks for something no host could do (an unknown release, --to for several layers)."""


@dataclass
class Task:
    """One layer of one host to upgrade (or a reason not to)."""

    host: str
    layer: str
    from_version: str | None  # None: Debian's updates (the base layer), or not installed
    to_version: str | None
    resume: Record | None = None  # an upgrade that did not finish: continued or rolled back
    refusals: list[str] = field(default_factory=list)  # each one stops it before any change
    nothing: str | None = None  # why there is nothing to do
    stale_lock: str | None = None  # the lock of a run that ended (taken over)
    notes: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.refusals and self.nothing is None

    @property
    def debian(self) -> bool:
        return layer(self.layer).upgrade.pins is None

    @property
    def what(self) -> str:
        if self.debian:
            return "Debian's updates"
        return f"{self.layer} {self.from_version} -> {self.to_version}"


def upgradable_layers(only: frozenset[str]) -> list[str]:
    """The layers `upgrade --only` names (all that have an upgrade, without --only)."""
    if only:
        without = sorted(name for name in only if layer(name).upgrade is None)
        if without:
            raise BadUpgradeRequest(
                f"--only {without[0]}: it has no releases of its own to upgrade (these do: "
                f"{', '.join(l.name for l in LAYERS if l.upgrade)}); its Debian packages are the base layer's"
            )
    return [item.name for item in LAYERS if item.upgrade and (not only or item.name in only)]


def target_of(profile: StackProfile, layer_name: str, to: str | None) -> str:
    """The release to reach: `--to`, else what the profile wants (its held release or the kit's)."""
    upgrade = layer(layer_name).upgrade
    wanted = wanted_version(profile, layer_name)
    if to is None:
        return wanted
    pins = getattr(versions(), upgrade.pins)
    if hasattr(pins, "releases"):
        if to not in pins.releases:
            raise BadUpgradeRequest(f"--to {to}: not a {layer_name} release this kit knows ({', '.join(pins.known)})")
        if numeric(to) > numeric(wanted):
            raise BadUpgradeRequest(
                f"--to {to}: the profile asks for {layer_name} {wanted}; set {upgrade.profile_key}: {to} in "
                "stack.yaml first (the profile is the record of what runs), then upgrade"
            )
    return to


def targets(profile: StackProfile, layers: list[str], to: str | None) -> dict[str, str]:
    """Each release-based layer's target; `--to` needs exactly one of them."""
    based = [name for name in layers if layer(name).upgrade.pins]
    if to is not None and len(based) != 1:
        raise BadUpgradeRequest(f"--to {to}: name the one layer it is for with --only (e.g. --only synapse)")
    return {name: target_of(profile, name, to) for name in based}


def holding(profile: StackProfile, layer_name: str, version: str) -> StackProfile:
    """The profile with the layer held at `version` (what a health gate expects to find)."""

    def set_in(model, keys: list[str]):
        if len(keys) == 1:
            return model.model_copy(update={keys[0]: version})
        return model.model_copy(update={keys[0]: set_in(getattr(model, keys[0]), keys[1:])})

    return set_in(profile, layer(layer_name).upgrade.profile_key.split("."))


# --- the lock --------------------------------------------------------------------------------


def owner_name(started: str) -> str:
    """Who this run is, as the host records the upgrade holding its maintenance lock."""
    return f"{socket.gethostname()} pid {os.getpid()} since {started}"


def lock_ended(holder: str) -> bool:
    """Whether the run holding the lock has ended: a process of this machine that is gone."""
    parts = holder.split()
    if len(parts) < 3 or parts[1] != "pid" or not parts[2].isdigit() or parts[0] != socket.gethostname():
        return False
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def lock_refusal(holder: str | None, owner: str, host: str, address: str) -> str | None:
    if holder is None or holder == owner or lock_ended(holder):
        return None
    return (
        f"another upgrade holds {host}'s maintenance lock ({holder}); if it no longer runs, let the lock go: "
        f"ssh root@{address} systemctl stop {MAINTENANCE_HOLDER}"
    )


# --- the rules -------------------------------------------------------------------------------


def version_refusals(layer_name: str, running: str, target: str) -> list[str]:
    """Releases only go forward; Nextcloud one major at a time, from its newest known patch."""
    upgrade = layer(layer_name).upgrade
    pins = getattr(versions(), upgrade.pins)
    if not hasattr(pins, "releases"):  # a commit: no order to check
        return []
    if numeric(target) < numeric(running):
        return [
            f"{layer_name} {running} runs, {target} is older: a database migrated by {running} cannot go back "
            f"(set {upgrade.profile_key}: {running} in stack.yaml)"
        ]
    if not upgrade.one_major_at_a_time or major(target) == major(running):
        return []
    if major(target) > major(running) + 1:
        step = newest_of_major(pins.known, major(running) + 1)
        hint = f"upgrade with --to {step} first" if step else f"this kit knows no release of {major(running) + 1}"
        return [f"{layer_name} moves one major at a time: {running} -> {target} skips a major; {hint}"]
    newest = newest_of_major(pins.known, major(running))
    if newest and newest != running and numeric(newest) > numeric(running):
        return [
            f"{layer_name} leaves a major from its newest patch: upgrade {running} with --to {newest} first, "
            f"then to {target}"
        ]
    return []


def newest_of_major(known: list[str], number: int) -> str | None:
    same = [v for v in known if major(v) == number]
    return max(same, key=numeric) if same else None


def runtime_refusals(layer_name: str, target: str, survey: HostSurvey) -> list[str]:
    """What the target needs of the host's Python and PostgreSQL (Synapse)."""
    if layer_name != "synapse":
        return []
    release = versions().synapse.releases[target]
    found = []
    python, postgresql = survey.runtimes.get("python", ""), survey.runtimes.get("postgresql", "")
    if not python or numeric(python) < numeric(release.python_min):
        found.append(f"Synapse {target} needs Python {release.python_min} or newer; the host has {python or 'none'}")
    if not postgresql or numeric(postgresql)[:1] < numeric(release.postgresql_min):
        found.append(
            f"Synapse {target} needs PostgreSQL {release.postgresql_min} or newer; the host runs "
            f"{postgresql or 'none that answers'}"
        )
    return found


def space_refusals(layer_name: str, survey: HostSurvey) -> list[str]:
    """Room for the dump and the new code (and the backup's staged dumps), with a margin."""
    upgrade = layer(layer_name).upgrade
    needs: dict[str, list[tuple[int, str, str]]] = {}
    dump_mb = sum(survey.database_mb.get(db, 0) for db in upgrade.dumps)
    records = survey.space.get(UPGRADES_DIR)
    if records:
        if upgrade.dumps:
            needs.setdefault(records.device, []).append((dump_mb, "the database dump", UPGRADES_DIR))
            if survey.has_backup:
                needs[records.device].append((dump_mb, "the pre-upgrade backup's dump", UPGRADES_DIR))
        if upgrade.pins is None:
            needs.setdefault(records.device, []).append((DEBIAN_DOWNLOADS_MB, "the updates' downloads", UPGRADES_DIR))
    if upgrade.running:
        parent = upgrade.running.rsplit("/", 1)[0] or "/"
        code = survey.space.get(parent)
        if code:
            needs.setdefault(code.device, []).append((upgrade.code_mb, "the new code", parent))
    found = []
    for device, items in needs.items():
        free = next(s.free_mb for s in survey.space.values() if s.device == device)
        total = sum(mb for mb, _, _ in items) + MARGIN_MB
        if total > free:
            what = " and ".join(f"{w} ({mb} MB)" for mb, w, _ in items)
            where = ", ".join(sorted({path for _, _, path in items}))
            found.append(
                f"not enough free disk: {what} need {total} MB with a margin of {MARGIN_MB} MB where {where} "
                f"is; {free} MB are free. Free some space (`apt-get clean`, `journalctl --vacuum-size=100M`) first"
            )
    return found


def backup_refusal(survey: HostSurvey) -> str | None:
    """The group backs the host up, so an upgrade begins with a snapshot: the script must be there."""
    if not survey.backup_missing:
        return None
    return (
        f"backup: enabled in stack.yaml, but {survey.plan.host.name} has no {BACKUP_SCRIPT} yet for the "
        f"pre-upgrade snapshot: run `commonstack deploy {survey.plan.profile.group}` first"
    )


def host_tasks(
    survey: HostSurvey,
    layers: list[str],
    wanted: dict[str, str],
    owner: str,
    address: str,
    reboot: bool = False,
) -> list[Task]:
    """Every task of one host, in registry order: unfinished upgrades first (resumed)."""
    host = survey.plan.host.name
    holder = survey.records.lock
    locked = lock_refusal(holder, owner, host, address)
    stale = holder if holder and holder != owner and locked is None else None
    no_backup = backup_refusal(survey)
    tasks: list[Task] = []
    for name, record in survey.records.unfinished.items():
        task = Task(host, name, record.from_version, record.to_version, resume=record, stale_lock=stale)
        task.refusals += [r for r in (locked, no_backup if BACKED_UP not in record.steps else None) if r]
        tasks.append(task)
    unfinished_here = bool(tasks)
    for name in layers:
        if name not in survey.plan.layers or name in survey.records.unfinished:
            continue
        task = Task(host, name, survey.installed.get(name), wanted.get(name), stale_lock=stale)
        tasks.append(task)
        if task.debian:
            debian_task(task, survey, reboot)
        elif task.from_version is None:
            task.nothing = f"{name} is not installed here yet: `commonstack deploy` installs {task.to_version}"
        elif task.from_version == task.to_version:
            task.nothing = f"{name} {task.from_version} runs: up to date"
        else:
            task.refusals += version_refusals(name, task.from_version, task.to_version)
            if not task.refusals:
                task.refusals += runtime_refusals(name, task.to_version, survey)
                if problem := survey.source_problems.get(name):
                    task.refusals.append(problem)
        if task.nothing is None:
            task.refusals += space_refusals(name, survey)
            task.refusals += [r for r in (locked, no_backup) if r]
            if unfinished_here:
                task.refusals.append("an upgrade on this host did not finish: it is resumed first; run again after it")
    return tasks


def debian_task(task: Task, survey: HostSurvey, reboot: bool) -> None:
    updates = survey.debian_updates
    rebooting = reboot and survey.runtimes.get("reboot") == "yes"
    if not updates and not rebooting:
        task.nothing = "Debian: no pending updates" + (
            "; a reboot is pending (`--reboot`)" if survey.runtimes.get("reboot") == "yes" else ""
        )
        return
    security = sum(1 for u in updates if u.endswith("(security)"))
    task.notes.append(f"{len(updates)} updates ({security} security)" if updates else "a reboot only")
    if not survey.runtimes.get("needrestart"):
        task.notes.append("needrestart is not installed: services keep running their old libraries until restarted")


def blocking_failures(results) -> list:
    """The failed checks that refuse an upgrade (a pending reboot is only advice)."""
    return [r for r in results if r.outcome == "failed" and r.check not in NOT_BLOCKING]


# --- what --list shows -----------------------------------------------------------------------


def short(version: str | None) -> str:
    """A release as the volunteer reads it (a commit by its first 12 characters)."""
    if version is None:
        return "none"
    return version[:12] if len(version) == 40 else version


def listing(survey: HostSurvey, group: str) -> list[tuple[str, str]]:
    """(layer, what it runs and what the kit would install) for every upgradable layer of the host,
    then its unfinished upgrades and the lock's holder."""
    plan, rows = survey.plan, []
    for name in plan.layers:
        upgrade = layer(name).upgrade
        if upgrade is None:
            continue
        if upgrade.pins is None:
            rows.append((name, _debian_line(survey)))
            continue
        running, wanted = survey.installed.get(name), wanted_version(plan.profile, name)
        newest = getattr(versions(), upgrade.pins).version
        command = f"`commonstack upgrade {group} --host {plan.host.name} --only {name}`"
        if running is None:
            text = f"not installed yet; `commonstack deploy` installs {short(wanted)}"
        elif running == wanted:
            text = f"{short(running)} runs: up to date"
            if wanted != newest:
                text += f" (the profile holds it there, {upgrade.profile_key}; the kit's current is {short(newest)})"
        elif _older(name, running, wanted):
            text = f"{short(running)} runs; the kit would install {short(wanted)}: {command}"
        else:
            text = f"{short(running)} runs, newer than the {short(wanted)} the profile asks for: set {upgrade.profile_key}"
        rows.append((name, text))
    for name, why in survey.down.items():
        rows.append((name, f"DOWN: {why}"))
    for name, record in survey.records.unfinished.items():
        rows.append((name, f"UNFINISHED: the upgrade {short(record.from_version)} -> {short(record.to_version)} "
                           f"stopped after '{record.last_step}': `commonstack upgrade {group} --host {plan.host.name}` "
                           "resumes it or rolls it back"))  # fmt: skip
    if survey.records.lock:
        rows.append(("lock", f"held by {survey.records.lock}"))
    return rows


def _older(layer_name: str, running: str, wanted: str) -> bool:
    pins = getattr(versions(), layer(layer_name).upgrade.pins)
    return not hasattr(pins, "releases") or numeric(running) < numeric(wanted)


def _debian_line(survey: HostSurvey) -> str:
    updates = survey.debian_updates
    security = sum(1 for u in updates if u.endswith("(security)"))
    text = f"Debian {survey.plan.release.codename}: "
    text += f"{len(updates)} updates pending ({security} security)" if updates else "no pending updates"
    if survey.runtimes.get("reboot") == "yes":
        text += "; a reboot is pending"
    return text
