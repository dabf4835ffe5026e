"""`commonstack try` leaves a group a volunteer can go on with: the real command on a real test
host, then `plan` (nothing to change), `check` (green, and saved) and `runbook` on the group it
wrote.

The small-group preset, offline as `try` is by default: Nextcloud's release is on
download.nextcloud.com, which the test hosts cannot reach, so `try` leaves Nextcloud out before
any change and writes it disabled, with the reason, in the group's stack.yaml. The group and its
test host get a name of this session's (`try --name`), never the developer's own `try`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from commonstack import testhosts
from commonstack.inventories.groups import Group
from tests.integration.conftest import new_host_name
from tests.integration.stacks import cli, failed_checks

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_try_writes_the_group_it_deployed(testhosts_state: Path, tmp_path: Path) -> None:
    name = new_host_name()
    try:
        tried = cli(tmp_path, "try", "small-group", "--name", name)
        assert tried.returncode == 0, tried.stdout + tried.stderr
        assert "Left out nextcloud: the profile says offline: true" in tried.stdout

        stack = (tmp_path / name / "stack.yaml").read_text()
        assert yaml.safe_load(stack)["nextcloud"]["enabled"] is False
        assert "# nextcloud is left out: the profile says offline: true" in stack

        planned = cli(tmp_path, "plan", name)
        assert planned.returncode == 0, planned.stdout + planned.stderr
        assert "server [bookworm, 2048 MB, amd64]: unchanged — 0 of" in planned.stdout, planned.stdout
        assert "skipped" not in planned.stdout

        checked = cli(tmp_path, "check", name, "--json", timeout=600)
        results = json.loads(checked.stdout)
        assert checked.returncode == 0, "\n".join(failed_checks(results)) or checked.stderr
        assert not any(r["layer"] == "nextcloud" and r["outcome"] == "passed" for r in results)

        # The check is saved for the runbook, without a secret; the runbook shows it.
        saved = Group(name, tmp_path).last_check_file.read_text()
        secrets = [v for v in yaml.safe_load((tmp_path / name / "secrets.yaml").read_text()).values() if v]
        assert not [s for s in secrets if s in saved]
        assert len(json.loads(saved)["results"]) == len(results)
        written = cli(tmp_path, "runbook", name)
        assert written.returncode == 0, written.stderr
        runbook = (tmp_path / name / "runbook.md").read_text()
        passed = sum(r["outcome"] == "passed" for r in results)
        assert f"`commonstack check {name} --json`: {passed} passed," in runbook
        assert "Left out of the small-group preset: nextcloud" in runbook
    finally:
        testhosts.down(name)
