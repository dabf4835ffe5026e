"""`commonstack upgrade` without test hosts: the preflight's rules (releases forward only, one
Nextcloud major at a time, the host's runtimes, free disk, the lock, unfinished upgrades), what
--list says, the host's records as the fact reads them, and the steps' shell run for real against
folders of the test's own (the lock, the journal, Nextcloud's switch and its way back, the
removal of what expired upgrades left)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from commonstack.deploys import nextcloud_upgrade, synapse_upgrade
from commonstack.deploys.upgrade import (
    HostSurvey,
    Record,
    Space,
    UpgradeContext,
    UpgradeRecords,
    UpgradesOnHost,
    aside_database,
    ExpiredUpgrades,
    UpgradeLockHeld,
    expired_removed,
    in_step,
    manual_restore,
    upgrade_lock,
)
from commonstack.plan import Release, plan_host
from commonstack.stacks.model import StackProfile
from commonstack.stacks.paths import MAINTENANCE_HOLDER, MAINTENANCE_LOCK, UPGRADE_HISTORY, UPGRADES_DIR
from commonstack.stacks.sizing import HostFacts
from commonstack.stacks.versions import versions
from commonstack.upgrades import preflight
from commonstack.upgrades.preflight import BadUpgradeRequest, holding, host_tasks, listing, targets, version_refusals
from tests.unit.pyinfra_tables import FakeHost, run_operation

SECRETS = {name: f"s3cr3t-{name}" for name in (
    "postgres_synapse_password", "postgres_nextcloud_password", "synapse_registration_shared_secret",
    "synapse_macaroon_secret_key", "synapse_form_secret", "matrix_admin_password", "turn_shared_secret",
    "nextcloud_admin_password", "restic_password", "backup_ssh_seed",
)}  # fmt: skip
OWNER = f"{socket.gethostname()} pid {os.getpid()} since 2026-11-30T10:00:00Z"


def profile(**overrides) -> StackProfile:
    document = {
        "group": "tenants", "domain": "example.org", "admin_email": "admin@example.org",
        "hosts": [{"name": "vps", "address": "203.0.113.7"}],
        "matrix": {"enabled": True}, "nextcloud": {"enabled": True},
    }  # fmt: skip
    for key, value in overrides.items():
        document[key] = {**document.get(key, {}), **value}
    return StackProfile.model_validate(document)


def survey(installed: dict, free_mb: int = 50_000, records: UpgradesOnHost | None = None, **changes) -> HostSurvey:
    stack = changes.pop("profile", None) or profile()
    plan = plan_host(stack, stack.hosts[0], SECRETS, Release(HostFacts(memory_mb=4096, cpus=2, arch="amd64")))
    values = dict(
        plan=plan,
        installed=installed,
        records=records or UpgradesOnHost(),
        space={UPGRADES_DIR: Space("1", free_mb), "/opt/synapse": Space("1", free_mb), "/var/www": Space("1", free_mb)},
        database_mb={"synapse": 120, "nextcloud": 40},
        runtimes={"python": "3.11", "postgresql": "15.8", "backup": "", "needrestart": "", "reboot": "", "boot": "x"},
        debian_updates=["libssl3 (security)", "tzdata"],
    )
    values.update(changes)
    return HostSurvey(**values)


def tasks_of(found: HostSurvey, layers=("base", "synapse", "nextcloud"), to=None, **wanted):
    chosen = list(layers)
    return {t.layer: t for t in host_tasks(found, chosen, {**targets(found.plan.profile, chosen, to), **wanted},
                                             OWNER, "203.0.113.7")}  # fmt: skip


# --- the rules ---------------------------------------------------------------------------------


def test_a_pending_upgrade_is_planned_with_its_dump_and_nothing_refused():
    tasks = tasks_of(survey({"synapse": "1.160.0", "nextcloud": "32.0.2"}))
    synapse = tasks["synapse"]
    assert (synapse.from_version, synapse.to_version, synapse.refusals) == ("1.160.0", versions().synapse.version, [])
    assert tasks["nextcloud"].nothing == "nextcloud 32.0.2 runs: up to date"
    assert tasks["base"].ready and tasks["base"].notes[0] == "2 updates (1 security)"


def test_releases_only_go_forward():
    refused = version_refusals("synapse", "1.163.2", "1.160.0")
    assert refused and "1.160.0 is older: a database migrated by 1.163.2 cannot go back" in refused[0]
    assert "set matrix.version: 1.163.2" in refused[0]


def test_nextcloud_moves_one_major_at_a_time_from_its_newest_patch():
    assert version_refusals("nextcloud", "32.0.2", "32.0.15") == []
    skipped = version_refusals("nextcloud", "31.0.9", "33.0.9")
    assert skipped == ["nextcloud moves one major at a time: 31.0.9 -> 33.0.9 skips a major; upgrade with "
                       "--to 32.0.15 first"]  # fmt: skip
    assert version_refusals("nextcloud", "32.0.2", "33.0.9") == [
        "nextcloud leaves a major from its newest patch: upgrade 32.0.2 with --to 32.0.15 first, then to 33.0.9"
    ]
    assert version_refusals("nextcloud", "32.0.15", "33.0.9") == []
    assert version_refusals("synapse", "1.160.0", "1.163.2") == [], "Synapse has no such rule"


def test_the_target_is_the_profiles_release_and_to_may_only_stop_short_of_it():
    held = profile(matrix={"version": "1.161.0"})
    assert targets(held, ["synapse"], None) == {"synapse": "1.161.0"}
    assert targets(held, ["synapse"], "1.160.0") == {"synapse": "1.160.0"}
    with pytest.raises(BadUpgradeRequest, match="set matrix.version: 1.162.0 in stack.yaml first"):
        targets(held, ["synapse"], "1.162.0")
    with pytest.raises(BadUpgradeRequest, match="not a synapse release this kit knows"):
        targets(held, ["synapse"], "1.150.0")
    with pytest.raises(BadUpgradeRequest, match="name the one layer it is for with --only"):
        targets(held, ["synapse", "nextcloud"], "1.160.0")
    with pytest.raises(BadUpgradeRequest, match="--only caddy: it has no releases of its own"):
        preflight.upgradable_layers(frozenset({"caddy"}))


def test_the_hosts_python_and_postgresql_must_suit_synapse():
    old = survey({"synapse": "1.160.0"}, runtimes={"python": "3.9", "postgresql": "13.4"})
    refusals = tasks_of(old, layers=("synapse",))["synapse"].refusals
    assert refusals == [
        f"Synapse {versions().synapse.version} needs Python 3.10 or newer; the host has 3.9",
        f"Synapse {versions().synapse.version} needs PostgreSQL 14 or newer; the host runs 13.4",
    ]


def test_a_disk_without_room_for_the_dump_and_the_new_code_is_refused():
    full = survey({"synapse": "1.160.0"}, free_mb=500)
    (refusal,) = tasks_of(full, layers=("synapse",))["synapse"].refusals
    assert refusal.startswith("not enough free disk: the database dump (120 MB) and the new code (400 MB) need "
                              "776 MB with a margin of 256 MB")  # fmt: skip
    assert "500 MB are free" in refusal
    assert tasks_of(survey({"synapse": "1.160.0"}, free_mb=800), layers=("synapse",))["synapse"].ready


def test_the_source_of_the_target_must_be_usable():
    found = survey({"nextcloud": "32.0.2"}, source_problems={"nextcloud": "nextcloud.archive: no such file"},
                   profile=profile(nextcloud={"version": "32.0.15"}))  # fmt: skip
    tasks = tasks_of(found, layers=("nextcloud",))
    assert tasks["nextcloud"].refusals == ["nextcloud.archive: no such file"]


def record(layer: str, *steps: str, folder: str | None = None) -> Record:
    plan = {"layer": layer, "id": f"{layer}-1700000000", "from": "1.160.0", "to": "1.161.0", "owner": "x"}
    return Record(folder or layer, plan, steps)


def test_a_group_with_backups_needs_the_backup_script_for_its_pre_upgrade_snapshot():
    backed_up = profile(backup={"enabled": True, "repository": "/mnt/usb/restic"})
    missing = survey({"synapse": "1.160.0"}, profile=backed_up)
    assert missing.has_backup and missing.backup_missing
    assert tasks_of(missing, layers=("synapse",))["synapse"].refusals == [
        "backup: enabled in stack.yaml, but vps has no /usr/local/sbin/commonstack-backup yet for the pre-upgrade "
        "snapshot: run `commonstack deploy tenants` first"
    ]
    there = survey({"synapse": "1.160.0"}, profile=backed_up, runtimes={"backup": "yes", "python": "3.11", "postgresql": "15.8"})
    assert tasks_of(there, layers=("synapse",))["synapse"].ready
    # Without backups in the profile, a script left on the host does not make one.
    leftover = survey({"synapse": "1.160.0"}, runtimes={"backup": "yes", "python": "3.11", "postgresql": "15.8"})
    assert not leftover.has_backup and tasks_of(leftover, layers=("synapse",))["synapse"].ready


def test_an_unfinished_upgrade_is_resumed_first_and_holds_every_other_back():
    records = UpgradesOnHost(unfinished={"synapse": record("synapse", "begun", "prepared", "stopped")})
    tasks = host_tasks(survey({"synapse": "1.160.0", "nextcloud": "32.0.2"}, records=records),
                       ["base", "synapse", "nextcloud"], {"synapse": "1.163.2", "nextcloud": "32.0.2"}, OWNER, "a")  # fmt: skip
    assert [t.layer for t in tasks] == ["synapse", "base", "nextcloud"]
    resumed = tasks[0]
    assert resumed.resume is not None and resumed.ready and (resumed.from_version, resumed.to_version) == (
        "1.160.0", "1.161.0")  # fmt: skip
    assert "an upgrade on this host did not finish: it is resumed first" in tasks[1].refusals[0]


def test_a_lock_of_a_run_that_ended_is_taken_over_and_any_other_refuses():
    ended = f"{socket.gethostname()} pid 999999 since 2026-11-30T09:00:00Z"  # no such process
    task = tasks_of(survey({"synapse": "1.160.0"}, records=UpgradesOnHost(lock=ended)), layers=("synapse",))["synapse"]
    assert task.ready and task.stale_lock == ended
    elsewhere = "laptop-of-someone pid 1 since 2026-11-30T09:00:00Z"
    task = tasks_of(survey({"synapse": "1.160.0"}, records=UpgradesOnHost(lock=elsewhere)), layers=("synapse",))["synapse"]
    assert task.refusals == [f"another upgrade holds vps's maintenance lock ({elsewhere}); if it no longer runs, let "
                             f"the lock go: ssh root@203.0.113.7 systemctl stop {MAINTENANCE_HOLDER}"]  # fmt: skip


def test_list_says_what_runs_what_the_kit_would_install_and_what_did_not_finish():
    held = profile(matrix={"version": "1.160.0"})
    records = UpgradesOnHost(unfinished={"nextcloud": record("nextcloud", "begun", "maintenance-on")}, lock=OWNER)
    rows = dict(listing(survey({"synapse": "1.160.0", "nextcloud": "32.0.2"}, profile=held), "tenants"))
    assert rows["base"] == "Debian bookworm: 2 updates pending (1 security)"
    assert rows["synapse"] == (f"1.160.0 runs: up to date (the profile holds it there, matrix.version; the kit's "
                               f"current is {versions().synapse.version})")  # fmt: skip
    rows = dict(listing(survey({"synapse": "1.160.0", "nextcloud": None}, records=records), "tenants"))
    assert rows["synapse"] == (f"1.160.0 runs; the kit would install {versions().synapse.version}: "
                               "`commonstack upgrade tenants --host vps --only synapse`")  # fmt: skip
    assert rows["nextcloud"].startswith("UNFINISHED: the upgrade 1.160.0 -> 1.161.0 stopped after 'maintenance-on'")
    assert rows["lock"] == f"held by {OWNER}"


def test_the_gate_expects_the_target_in_the_profile_key_of_the_layer():
    held = holding(profile(), "synapse", "1.161.0")
    assert held.matrix.version == "1.161.0" and held.matrix.enabled
    assert holding(profile(), "discourse", "a" * 40).discourse.launcher.commit == "a" * 40


# --- the host's records --------------------------------------------------------------------------


def test_the_records_fact_reads_unfinished_upgrades_the_lock_and_the_history():
    output = [
        f"@lock {OWNER}",
        "@record synapse",
        '{"layer": "synapse", "id": "synapse-1700000100", "from": "1.160.0", "to": "1.161.0"}',
        "@step begun 1700000100",
        "@step prepared 1700000200",
        "@record history/nextcloud-1700000000",
        '{"layer": "nextcloud", "id": "nextcloud-1700000000", "from": "32.0.2", "to": "32.0.15"}',
        "@step begun 1700000000",
        "@step finished 1700000500",
        "@record broken",
        "not json",
    ]
    found = UpgradeRecords().process(output)
    assert found.lock == OWNER and list(found.unfinished) == ["synapse"]
    synapse = found.unfinished["synapse"]
    assert synapse.steps == ("begun", "prepared") and synapse.last_step == "prepared" and synapse.outcome is None
    assert synapse.times == {"begun": 1700000100, "prepared": 1700000200}
    (done,) = found.history
    assert done.outcome == "finished" and done.layer == "nextcloud"
    assert UpgradeRecords().process([]) == UpgradesOnHost()


# --- the steps' shell, for real -----------------------------------------------------------------


def local(command: str, root: Path) -> str:
    """A host's command made to run in `root` (its absolute paths moved there; the upgrade's holder
    of the maintenance lock is the file `root`/holder: this machine's systemd is not the host's)."""
    command = command.replace(f"systemctl is-active -q {MAINTENANCE_HOLDER}", f"test -e {root}/holder")
    for path in (MAINTENANCE_LOCK, UPGRADES_DIR, "/var/www", "/opt/synapse"):
        command = command.replace(path, f"{root}{path}")
    return command


def sh(command: str, root: Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", local(command, root)], capture_output=True, text=True, check=check)


def test_a_step_runs_only_under_the_maintenance_lock_and_is_recorded_only_when_it_succeeded(tmp_path):
    journal = tmp_path / "journal"
    unlocked = sh(in_step("touch " + str(tmp_path / "done"), str(journal), "first"), tmp_path, check=False)
    assert unlocked.returncode == 75 and "no upgrade holds" in unlocked.stderr and not (tmp_path / "done").exists()
    assert not journal.exists()
    (tmp_path / "holder").touch()
    sh(in_step("touch " + str(tmp_path / "done"), str(journal), "first"), tmp_path)
    failed = sh(in_step("false", str(journal), "second"), tmp_path, check=False)
    assert failed.returncode != 0 and (tmp_path / "done").exists()
    assert [line.split()[0] for line in journal.read_text().splitlines()] == ["first"]


def test_the_lock_of_another_upgrade_that_runs_is_never_taken():
    """What the lock's commands are is its table of cases; holding it is tested on real hosts."""
    with pytest.raises(UpgradeLockHeld, match="another upgrade holds the maintenance lock: other"):
        run_operation(upgrade_lock, {"owner": "me"}, FakeHost({"upgrade.LockHolder": "other"}))
    with pytest.raises(UpgradeLockHeld):
        run_operation(upgrade_lock, {"owner": "me", "stale": "ended"}, FakeHost({"upgrade.LockHolder": "other"}))


def nextcloud_context(root: Path) -> UpgradeContext:
    plan = plan_host(profile(), profile().hosts[0], SECRETS, Release(HostFacts(memory_mb=4096, cpus=2, arch="amd64")))
    return UpgradeContext("nextcloud", "nextcloud-1700000000", "32.0.2", "33.0.9", plan, OWNER)


def release_tree(folder: Path, version: str, *apps: str) -> None:
    (folder / "config").mkdir(parents=True)
    (folder / "version.php").write_text(f"<?php $OC_VersionString = '{version}';\n")
    (folder / "config" / "config.sample.php").write_text(f"sample of {version}\n")
    for app in apps:
        (folder / "apps" / app).mkdir(parents=True)


def nextcloud_commands(ctx: UpgradeContext, phase) -> dict[str, str]:
    found = {}

    class Recorder:
        done = ()

        def __getattr__(self, name):
            return getattr(ctx, name)

        def step(self, step, command, name):
            found[step] = command

    phase(Recorder())
    return found


def test_nextcloud_switch_carries_config_and_added_apps_and_the_way_back_restores_the_old_tree(tmp_path):
    www = tmp_path / "var/www"
    release_tree(www / "nextcloud", "32.0.2", "files", "calendar")
    (www / "nextcloud/config/config.php").write_text("<?php $CONFIG = ['installed' => true];\n")
    (www / "nextcloud/core").mkdir()
    (www / "nextcloud/core/shipped.json").write_text('{"shippedApps": ["files"]}\n')
    release_tree(www / "nextcloud-33.0.9", "33.0.9", "files")
    ctx = nextcloud_context(tmp_path)
    commands = nextcloud_commands(ctx, nextcloud_upgrade.apply)
    switch = commands["switched"].replace("systemctl reload php8.2-fpm", "true").replace("chown -R www-data:www-data", "true")
    for _ in range(2):  # a second run (an interrupted one resumed) changes nothing more
        sh(switch, tmp_path)
        assert "33.0.9" in (www / "nextcloud/version.php").read_text()
        assert (www / "nextcloud/config/config.php").exists() and (www / "nextcloud/apps/calendar").is_dir()
        assert (www / "nextcloud/config/config.sample.php").read_text() == "sample of 33.0.9\n"
        assert "32.0.2" in (www / "nextcloud-32.0.2/version.php").read_text()
    back = nextcloud_commands(ctx, nextcloud_upgrade.rollback)["switched-back"].replace(
        "systemctl reload php8.2-fpm", "true")
    for _ in range(2):
        sh(back, tmp_path)
        assert "32.0.2" in (www / "nextcloud/version.php").read_text()
        assert "33.0.9" in (www / "nextcloud-33.0.9.failed-1700000000/version.php").read_text()
        assert not (www / "nextcloud-32.0.2").exists()


def test_expired_leftovers_are_removed_but_never_the_code_that_runs(tmp_path):
    history = tmp_path / UPGRADE_HISTORY.lstrip("/")
    opt = tmp_path / "opt/synapse"
    for name in ("venv-1.160.0", "venv-1.161.0"):
        (opt / name).mkdir(parents=True)
    (opt / "venv").symlink_to("venv-1.161.0")
    (tmp_path / "holder").touch()  # the upgrade holds the maintenance lock
    entries = {
        "synapse-1": ("finished", [f"leftovers.finished {opt}/venv-1.160.0", f"leftovers.rolled-back {opt}/venv-1.161.0"]),
        "synapse-2": ("rolled-back", [f"leftovers.rolled-back {opt}/venv-1.161.0"]),  # it runs now: kept
    }  # fmt: skip
    for name, (outcome, leftovers) in entries.items():
        (history / name).mkdir(parents=True)
        (history / name / "journal").write_text(f"begun 900\n{outcome} 1000\n")
        (history / name / "leftovers").write_text("".join(f"{line}\n" for line in leftovers))
        (history / name / "synapse.dump").write_text("dump")
    expired = [f"{UPGRADE_HISTORY}/synapse-1", f"{UPGRADE_HISTORY}/synapse-2"]
    commands = run_operation(expired_removed, {"grace_seconds": 7 * 86400, "protected": ("/opt/synapse/venv",)},
                             FakeHost({"upgrade.ExpiredUpgrades": {"grace_seconds=604800": expired}}))  # fmt: skip
    for command in commands:
        sh(command, tmp_path)
    assert sorted(p.name for p in opt.iterdir()) == ["venv", "venv-1.161.0"]
    assert not (history / "synapse-1/synapse.dump").exists() and not (history / "synapse-2/synapse.dump").exists()
    assert all("cleaned " in (history / name / "journal").read_text() for name in entries)
    # Which are expired is the fact's to say, from the journals' times:
    found = subprocess.run(["sh", "-c", local(ExpiredUpgrades().command(grace_seconds=7 * 86400), tmp_path)],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert found.stdout == "", "cleaned ones are not expired again"
    (history / "synapse-3").mkdir()
    (history / "synapse-3" / "journal").write_text(f"begun 900\nfinished {10**10}\n")
    assert subprocess.run(["sh", "-c", local(ExpiredUpgrades().command(grace_seconds=1), tmp_path)],
                          capture_output=True, text=True).stdout == "", "not expired yet"  # fmt: skip


def test_a_failed_rollback_says_exactly_how_to_restore_by_hand():
    ctx = UpgradeContext("synapse", "synapse-1700000000", "1.160.0", "1.161.0", None, OWNER)
    lines = synapse_upgrade.manual_rollback(ctx)
    assert lines[0] == "systemctl stop matrix-synapse"
    assert "createdb -O synapse -E UTF8 --locale=C -T template0 synapse_restored" in lines[1]
    assert f"pg_restore --exit-on-error -d synapse_restored < {UPGRADES_DIR}/synapse/synapse.dump" in lines[2]
    assert lines[-2:] == ["ln -sfn venv-1.160.0 /opt/synapse/venv",
                          "systemctl start matrix-synapse && curl -fsS http://127.0.0.1:8008/health"]  # fmt: skip
    assert manual_restore(ctx)[-1] == f"tar -C / -xpf {UPGRADES_DIR}/synapse/saved.tar"
    assert aside_database("synapse", ctx.id) == "synapse_before_rollback_1700000000"
