"""Health checks of the backups: the timers are on and their services sandboxed, the last backup
succeeded less than 26 hours ago, the repository answers and opens with the group's password, and
the last `restic check` found nothing wrong. The records are written by /usr/local/sbin/commonstack-backup."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from commonstack.checks.expect import assert_sandboxed, require_layer
from commonstack.checks.host_state import unit_state
from commonstack.stacks.paths import BACKUP_SCRIPT, BACKUP_STATE

MAX_AGE = timedelta(hours=26)  # a daily timer with its random delay, and some slack
CHECK_MAX_AGE = timedelta(days=8)  # a weekly check


def _record(host, name: str) -> dict | None:
    found = host.run("cat %s", f"{BACKUP_STATE}/{name}")
    if found.rc != 0 or not found.stdout.strip():
        return None
    return json.loads(found.stdout)


def _age(record: dict) -> timedelta:
    return datetime.now(timezone.utc) - datetime.fromisoformat(record["time"].replace("Z", "+00:00"))


def _hours(age: timedelta) -> str:
    return f"{age.total_seconds() / 3600:.0f} h"


def test_backup_timers_are_active(host, stack):
    require_layer(stack, "backup")
    for timer in ("commonstack-backup.timer", "commonstack-backup-check.timer"):
        assert unit_state(host, stack, timer).is_running, f"{timer} is not active: `systemctl enable --now {timer}`"


def test_backup_services_are_sandboxed(host, stack):
    require_layer(stack, "backup")
    assert_sandboxed(host, stack, "backup")


def test_last_backup_succeeded_within_26_hours(host, stack):
    require_layer(stack, "backup")
    success = _record(host, "last-success")
    failure = _record(host, "last-failure")
    why = "`journalctl -u commonstack-backup -n 30` on the host says why"
    if failure and (not success or failure["time"] > success["time"]):
        why = f"the last run, {_hours(_age(failure))} ago, failed: {why}"
    assert success, f"no backup has succeeded on this host yet ({why}); `commonstack backup GROUP` makes one now"
    age = _age(success)
    assert age < MAX_AGE, f"the last good backup (snapshot {success['snapshot']}) is {_hours(age)} old: {why}"


def test_repository_answers(host, stack):
    require_layer(stack, "backup")
    answer = host.run("%s probe", BACKUP_SCRIPT).stdout.strip()
    assert answer == "ok", f"{answer or 'no answer'}"


def test_last_repository_check_passed(host, stack):
    require_layer(stack, "backup")
    check = _record(host, "last-check")
    if check is None:
        pytest.skip("restic check has not run yet: commonstack-backup-check.timer runs it weekly")
    assert check["ok"], (
        f"restic check failed {_hours(_age(check))} ago: {check['message']}; a damaged repository cannot be "
        "trusted: see `journalctl -u commonstack-backup-check`, then `commonstack drill GROUP`"
    )
    assert _age(check) < CHECK_MAX_AGE, (
        f"the last restic check ran {_hours(_age(check))} ago: is commonstack-backup-check.timer active?"
    )
