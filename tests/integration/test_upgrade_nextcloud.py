"""`commonstack upgrade` of Nextcloud on a real test host, through the CLI, with the STAND-IN
releases of tests/integration/nextcloud_stand_in.py (download.nextcloud.com is unreachable here):
not Nextcloud, but real signed tarballs, the kit's real verification and unpacking, a real occ
(of the stand-in) that migrates the real PostgreSQL database and keeps the group's apps (stand-in
calendar and contacts for majors 32 to 34), PHP-FPM and Caddy for real.

One 2 GB host for the module (Nextcloud alone, with backups), deployed at the stand-in N =
32.0.90 from a folder of releases (nextcloud.archive), then in order:

1. N -> N+2 (34.0.90) refused before any change: one major at a time;
2. a pre-upgrade backup that fails (its repository gone) stops the upgrade before any change;
3. N -> 33.0.80, a TEST-ONLY BROKEN RELEASE (its status.php answers 500): the health gate fails,
   the rollback puts N, its database and config back; maintenance mode is off;
4. N -> N+1 (33.0.90): upgraded, migrated, maintenance mode off, checks green; a pre-upgrade
   snapshot came first, and a backup started meanwhile found the maintenance lock held;
5. N+1 -> N+2: the profile's release, reached one major at a time.

The backups go to a local repository in /run (a tmpfs: the stand-in of a mounted USB disk, which
the backup script insists on); backups to another machine are test_backup_*.py's subject.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest

from commonstack import testhosts
from commonstack.stacks.paths import MAINTENANCE_HOLDER
from tests.integration.conftest import new_host_name
from tests.integration.nextcloud_stand_in import build_apps, build_release, known_releases, run_cli
from tests.integration.stacks import failed_checks, write_group

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GROUP = "ncup"
N, BROKEN, NEXT, AFTER = "32.0.90", "33.0.80", "33.0.90", "34.0.90"
LAYERS = ("--only", "base", "--only", "postgres", "--only", "redis", "--only", "caddy", "--only", "nextcloud",
          "--only", "backup")  # fmt: skip
OCC = "cd / && runuser -u www-data -- php /var/www/nextcloud/occ"
RECORDS = "/var/lib/commonstack/upgrades"
REPOSITORY = "/run/usb-stand-in/restic"


@pytest.fixture(scope="module")
def site(testhosts_state, tmp_path_factory, testhost_ssh):
    if not shutil.which("gpg"):
        pytest.skip("needs gpg on this machine to sign the stand-in releases (package gnupg)")
    inventories = tmp_path_factory.mktemp("inventories")
    work = tmp_path_factory.mktemp("stand-in")
    folder = inventories / GROUP / "stand-in"
    first = build_release(folder, work, N)
    releases = [first] + [build_release(folder, work, v, broken=v == BROKEN, keys=(first.pinned, first.other))
                          for v in (BROKEN, NEXT, AFTER)]  # fmt: skip
    for release in releases:
        first.pinned.sign(release.archive)
    apps = build_apps(folder, majors=(32, 34))
    host = testhosts.up(new_host_name(), suite="bookworm", memory="2G")
    site = {"host": host, "inventories": inventories, "pins": known_releases(releases, current=AFTER),
            "apps": apps.pins, "app_archives": {app: f"stand-in/{a.name}" for app, a in apps.archives.items()}}  # fmt: skip
    try:
        hold(site, N)
        started = time.monotonic()
        deployed = cli(site, "deploy", GROUP, "--yes", *LAYERS, timeout=1800)
        assert deployed.returncode == 0, f"deploy failed:\n{deployed.stdout}\n{deployed.stderr}"
        site["seconds"] = time.monotonic() - started
        backed_up = cli(site, "backup", GROUP, timeout=600)  # the backup checks want a recent one
        assert backed_up.returncode == 0, backed_up.stdout + backed_up.stderr
        yield site
    finally:
        testhosts.down(host.name)


def hold(site, version: str) -> None:
    nextcloud = {"archive": "stand-in", "version": version, "app_archives": site["app_archives"]}
    write_group(site["inventories"], GROUP, "small-group", {"server": site["host"]},
                overrides={"matrix": {"enabled": False}, "nextcloud": nextcloud,
                           "backup": {"enabled": True, "repository": REPOSITORY}})  # fmt: skip


def cli(site, *args: str, timeout=1200):
    return run_cli(site["inventories"], *args, release=site["pins"], apps=site["apps"], timeout=timeout)


def cli_started(site, *args: str) -> subprocess.Popen:
    """`cli`, started: the test watches the host while it runs."""
    return run_cli(site["inventories"], *args, release=site["pins"], apps=site["apps"], wait=False)


def on_host(site, testhost_ssh) -> dict:
    """What the host runs: Nextcloud's status, the stand-in's migrations and enabled apps, the
    upgrade records, the releases in /var/www."""

    def run(command: str) -> str:
        result = testhost_ssh(site["host"], command)
        assert result.returncode == 0, f"{command}: {result.stderr}"
        return result.stdout

    status = json.loads(run(f"{OCC} status --output=json"))
    exit_code = testhost_ssh(site["host"], f"{OCC} status --exit-code").returncode
    migrations = run("cd / && runuser -u postgres -- psql -XAtq -d nextcloud -c "
                     "'SELECT version FROM oc_standin_migrations ORDER BY 1' 2>/dev/null; true").split()  # fmt: skip
    apps = sorted(json.loads(run(f"{OCC} app:list --output=json"))["enabled"])
    unfinished = [n for n in run(f"ls {RECORDS} 2>/dev/null; true").split() if n != "history"]
    return {"version": status["versionstring"], "maintenance": status["maintenance"], "exit_code": exit_code,
            "migrations": migrations, "apps": apps, "unfinished": unfinished,
            "code": run("ls -d /var/www/nextcloud*").split()}  # fmt: skip


def checks_pass(site) -> list[dict]:
    result = cli(site, "check", GROUP, "--json", timeout=600)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    results = json.loads(result.stdout)
    assert not failed_checks(results), failed_checks(results)
    return results


def test_the_stand_in_release_n_runs_and_its_checks_pass(site, testhost_ssh):
    print(f"deployed the stand-in {N} in {site['seconds']:.0f} s")
    assert on_host(site, testhost_ssh) | {"code": None} == {
        "version": N, "maintenance": False, "exit_code": 0, "migrations": [], "unfinished": [], "code": None,
        "apps": ["calendar", "contacts", "dav", "files"],
    }  # fmt: skip
    results = checks_pass(site)
    assert {r["outcome"] for r in results if r["layer"] == "nextcloud"} == {"passed"}


def test_n_to_n_plus_2_is_refused_before_any_change(site, testhost_ssh):
    before = on_host(site, testhost_ssh)
    hold(site, AFTER)
    result = cli(site, "upgrade", GROUP, "--only", "nextcloud", "-y")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"server: nextcloud {N} -> {AFTER}: refused" in result.stdout
    assert f"nextcloud moves one major at a time: {N} -> {AFTER} skips a major; upgrade with --to {NEXT} first" \
        in result.stdout, result.stdout  # fmt: skip
    assert on_host(site, testhost_ssh) == before, "the host was changed"
    deployed = cli(site, "deploy", GROUP, "--yes", "--no-check", *LAYERS)
    assert f"server: nextcloud {N} runs and the profile asks for {AFTER}: the deploy keeps {N}" in deployed.stdout
    assert "Nothing to change." in deployed.stdout, deployed.stdout


def snapshots(site, testhost_ssh) -> list[dict]:
    result = testhost_ssh(site["host"], "commonstack-backup snapshots", timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_failed_pre_upgrade_backup_stops_the_upgrade_before_any_change(site, testhost_ssh):
    before, taken = on_host(site, testhost_ssh), len(snapshots(site, testhost_ssh))
    away = testhost_ssh(site["host"], f"mv {REPOSITORY} {REPOSITORY}.away")
    assert away.returncode == 0, away.stderr
    try:
        # --force: the backup checks see the repository gone too, and would refuse the upgrade first.
        result = cli(site, "upgrade", GROUP, "--only", "nextcloud", "--to", NEXT, "--force", "-y")
    finally:
        testhost_ssh(site["host"], f"mv {REPOSITORY}.away {REPOSITORY}")
    print(result.stdout)
    assert result.returncode == 1, result.stdout + result.stderr
    (verdict,) = [line for line in result.stdout.splitlines() if "NOT UPGRADED" in line]
    assert "the pre-upgrade backup failed, so the upgrade stopped there: " in verdict, verdict
    assert f"error: there is no repository at {REPOSITORY}" in verdict, "the backup's reason is not said"
    assert verdict.endswith("nothing of the running nextcloud was changed"), verdict
    assert on_host(site, testhost_ssh) == before, "the host was changed"
    assert len(snapshots(site, testhost_ssh)) == taken
    assert testhost_ssh(site["host"], f"systemctl is-active -q {MAINTENANCE_HOLDER}").returncode != 0, "the lock is still held"


def test_a_release_that_fails_its_health_gate_is_rolled_back_out_of_maintenance_mode(site, testhost_ssh):
    result = cli(site, "upgrade", GROUP, "--only", "nextcloud", "--to", BROKEN, "-y")
    print(result.stdout)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Maintenance mode on, background jobs stopped: the downtime starts" in result.stdout
    assert f"rolling back nextcloud to {N}: the health gate failed: " in result.stdout
    assert "status php says installed and not in maintenance (status.php answers 500" in result.stdout
    assert "server: nextcloud ROLLED BACK in " in result.stdout and "is in maintenance mode" not in result.stdout
    now = on_host(site, testhost_ssh)
    assert now["version"] == N and now["maintenance"] is False and now["exit_code"] == 0, now
    assert now["migrations"] == [] and now["unfinished"] == [], "the database from before the upgrade is not back"
    assert f"/var/www/nextcloud-{BROKEN}.failed-" in " ".join(now["code"]), "the failed release was not kept aside"
    checks_pass(site)


def test_n_to_n_plus_1_upgrades_migrates_and_leaves_maintenance_mode(site, testhost_ssh):
    taken = {s["id"] for s in snapshots(site, testhost_ssh)}
    upgrade = cli_started(site, "upgrade", GROUP, "--only", "nextcloud", "--to", NEXT, "-y")
    backup = None  # a backup started while the upgrade holds the maintenance lock: it must not run
    while upgrade.poll() is None and backup is None:
        if testhost_ssh(site["host"], f"systemctl is-active -q {MAINTENANCE_HOLDER}").returncode == 0:
            backup = testhost_ssh(site["host"], "COMMONSTACK_LOCK_WAIT=2 commonstack-backup run", timeout=60)
        time.sleep(0.5)
    stdout, stderr = upgrade.communicate(timeout=1200)
    print(stdout)
    assert upgrade.returncode == 0, stdout + stderr
    assert backup is not None, "the upgrade never held the maintenance lock"
    assert backup.returncode == 75 and "stayed taken" in backup.stderr, (backup.returncode, backup.stderr)
    assert stdout.index("Back up the host first") < stdout.index("Maintenance mode on"), "no snapshot before the change"
    (new,) = [s for s in snapshots(site, testhost_ssh) if s["id"] not in taken]
    assert "pre-upgrade" in new["tags"], new
    assert testhost_ssh(site["host"], f"systemctl is-active -q {MAINTENANCE_HOLDER}").returncode != 0, "the lock is still held"
    result = subprocess.CompletedProcess(upgrade.args, upgrade.returncode, stdout, stderr)
    assert re.search(r"server: nextcloud UPGRADED in \d+ s, down \d+ s", result.stdout), result.stdout
    now = on_host(site, testhost_ssh)
    assert now["version"] == NEXT and now["maintenance"] is False and now["exit_code"] == 0, now
    assert now["migrations"] == [f"{NEXT}.0"] and now["unfinished"] == [], now
    assert now["apps"] == ["calendar", "contacts", "dav", "files"], "the group's apps were not carried over"
    assert f"/var/www/nextcloud-{N}" in now["code"], "the old release is not kept for its grace period"
    checks_pass(site)


def test_the_profiles_release_is_reached_one_major_at_a_time(site, testhost_ssh):
    result = cli(site, "upgrade", GROUP, "--only", "nextcloud", "-y")
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    now = on_host(site, testhost_ssh)
    assert now["version"] == AFTER and now["migrations"] == [f"{NEXT}.0", f"{AFTER}.0"] and not now["maintenance"]
    results = checks_pass(site)
    assert {r["outcome"] for r in results if r["layer"] == "nextcloud"} == {"passed"}
    listed = cli(site, "upgrade", GROUP, "--list")
    assert f"nextcloud  {AFTER} runs: up to date" in listed.stdout, listed.stdout
    again = cli(site, "deploy", GROUP, "--yes", "--no-check", *LAYERS)
    assert "Nothing to change." in again.stdout, again.stdout
