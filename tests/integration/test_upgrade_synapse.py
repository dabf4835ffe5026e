"""`commonstack upgrade` of Synapse on a real test host, through the CLI, with a real client.

One 1 GB host for the module (the chat preset), deployed with Synapse held at an older PyPI
release (matrix.version: 1.160.0) and seeded through matrix-nio with two users, two rooms and
their messages. Then, in order, each test leaving the host healthy for the next:

1. `upgrade --list`, and a deploy with a newer pin that changes nothing and says so;
2. refusals before any change: a red check (coturn stopped), a full disk (a small tmpfs over
   the upgrade records' folder, filled);
3. a failing upgrade rolled back: the target, 1.161.0, is a TEST-ONLY BROKEN RELEASE on this
   host: a unit drop-in (never part of a deploy) makes Synapse listen elsewhere whenever
   /opt/synapse/venv points at 1.161.0, so it starts and fails its health gate;
4. the controller killed at a random step of 1.160.0 -> 1.161.0 (drop-in gone): the next run
   resumes or rolls back, and ends healthy;
5. the upgrade to the kit's current release: schema migrated, reported version, messages;
6. Debian's updates (`--only base`).

Needs root (test hosts), PyPI through the controller's CA (pip on the host), and matrix-nio.
"""

from __future__ import annotations

import asyncio
import os
import random
import shlex
import signal
import subprocess
import sys
import time

import pytest

from commonstack import testhosts
from commonstack.inventories.groups import group
from commonstack.stacks.paths import MAINTENANCE_HOLDER
from tests.integration.conftest import new_host_name
from tests.integration.matrix_client import CADDY_ROOT, Homeserver, logged_in, nio, wait_for_message
from tests.integration.stacks import check_results, cli, deploy, failed_checks, write_group

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GROUP = "up"
OLD, BROKEN, CURRENT = "1.160.0", "1.161.0", "1.163.2"
RECORDS = "/var/lib/commonstack/upgrades"
# A schema delta that 1.163.2 brings and 1.160.0 and 1.161.0 lack (synapse/storage/schema/main/delta/94).
NEW_DELTA = "94/11_destination_room_sticky_events.sql"
BROKEN_DROP_IN = "/etc/systemd/system/matrix-synapse.service.d/50-test-broken-release.conf"
BROKEN_RELEASE = f"""\
# TEST ONLY (tests/integration/test_upgrade_synapse.py): Synapse {BROKEN} made broken on this host.
# Whenever /opt/synapse/venv points at {BROKEN}, Synapse listens on 127.0.0.1:8118 instead of 8008:
# it starts, and its health gate fails. Any other release runs as deployed.
[Service]
ExecStartPre=+/bin/sh -c 'if [ "$(readlink /opt/synapse/venv)" = venv-{BROKEN} ]; then printf "listeners: [{{port: 8118, bind_addresses: [127.0.0.1], type: http, x_forwarded: true, resources: [{{names: [client, federation], compress: false}}]}}]\\\\n" > /etc/matrix-synapse-test/gate.yaml; else echo "{{}}" > /etc/matrix-synapse-test/gate.yaml; fi'
ExecStart=
ExecStart=/opt/synapse/venv/bin/python -m synapse.app.homeserver --config-path=/etc/matrix-synapse/homeserver.yaml --config-path=/etc/matrix-synapse-test/gate.yaml
"""


def ssh(testhost_ssh, server: Homeserver, command: str, timeout: float = 300) -> str:
    result = testhost_ssh(server.testhost, command, timeout=timeout)
    assert result.returncode == 0, f"{command}: {result.stderr or result.stdout}"
    return result.stdout


def hold(server: Homeserver, version: str | None) -> None:
    """The profile holds Synapse at `version` (None: the kit's current release)."""
    overrides = {"domain": server.domain, "admin_email": f"admin@{server.domain}"}
    if version:
        overrides["matrix"] = {"version": version}
    write_group(server.inventories, GROUP, "chat", {"server": server.testhost}, overrides, memory_mb=1024)


def upgrade(server: Homeserver, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return cli(server.inventories, "upgrade", GROUP, *args, timeout=timeout)


def running(testhost_ssh, server: Homeserver) -> dict:
    """What runs on the host: the release /opt/synapse/venv holds, Synapse's PID, the records."""
    out = ssh(testhost_ssh, server, (
        "readlink /opt/synapse/venv; systemctl show --property=MainPID --value matrix-synapse; "
        f"ls {RECORDS} 2>/dev/null | grep -v -e history | tr '\\n' ' '; echo"
    ))  # fmt: skip
    link, pid, unfinished = (out.splitlines() + ["", "", ""])[:3]
    return {"release": link.removeprefix("venv-"), "pid": pid, "unfinished": unfinished.split()}


def seen_deltas(testhost_ssh, server: Homeserver) -> set[str]:
    query = "SELECT file FROM applied_schema_deltas"
    return set(ssh(testhost_ssh, server, f"cd / && runuser -u postgres -- psql -XAtq -d synapse -c {shlex.quote(query)}").split())


def create_user(testhost_ssh, server: Homeserver, localpart: str, password: str) -> str:
    """A user made on the host with Synapse's shared registration secret (registration is closed)."""
    ssh(testhost_ssh, server, f"/opt/synapse/venv/bin/register_new_matrix_user --no-admin -u {localpart} "
                              f"-p {shlex.quote(password)} -c /etc/matrix-synapse/homeserver.yaml http://127.0.0.1:8008")  # fmt: skip
    return f"@{localpart}:{server.domain}"


async def seed(server: Homeserver, alice: str, password: str) -> dict:
    """Two users, two rooms, messages from both: what the upgrades must keep readable."""
    admin = await logged_in(server)
    member = await logged_in(server, alice, password)
    rooms, messages = [], []
    try:
        for number in (1, 2):
            created = await admin.room_create(name=f"upgrade test room {number}", invite=[alice])
            assert isinstance(created, nio.RoomCreateResponse), created
            joined = await member.join(created.room_id)
            assert isinstance(joined, nio.JoinResponse), joined
            for client in (admin, member):
                body = f"before the upgrades: {client.user_id} in room {number} ({time.time()})"
                sent = await client.room_send(created.room_id, "m.room.message", {"msgtype": "m.text", "body": body})
                assert isinstance(sent, nio.RoomSendResponse), sent
                messages.append((created.room_id, body))
            rooms.append(created.room_id)
    finally:
        for client in (admin, member):
            await client.close()
    return {"alice": alice, "password": password, "rooms": rooms, "messages": messages}


def messages_are_readable(server: Homeserver, seeded: dict) -> None:
    """Both users log in again and find every message sent before the upgrades."""

    async def read() -> None:
        for user, password in ((None, None), (seeded["alice"], seeded["password"])):
            client = await logged_in(server, user, password)
            try:
                for room_id, body in seeded["messages"]:
                    await wait_for_message(client, room_id, body, timeout=30)
            finally:
                await client.close()

    asyncio.run(read())


def healthy(server: Homeserver) -> None:
    results = check_results(server.inventories, GROUP)
    assert not failed_checks(results), failed_checks(results)


@pytest.fixture(scope="module")
def homeserver(testhosts_state, tmp_path_factory, testhost_ssh) -> Homeserver:
    inventories = tmp_path_factory.mktemp("upgrade-inventories")
    testhost = testhosts.up(new_host_name(), memory="1G", trust_controller_ca=True)
    try:
        server = Homeserver(GROUP, "upgrade.test", testhost, inventories)
        hold(server, OLD)
        started = time.monotonic()
        deploy(inventories, GROUP)
        server.deploy_seconds = time.monotonic() - started
        server.caddy_root = ssh(testhost_ssh, server, f"cat {CADDY_ROOT}")
        yield server
    finally:
        testhosts.down(testhost.name)


@pytest.fixture(scope="module")
def seeded(homeserver, testhost_ssh) -> dict:
    password = "upgrade-test-" + os.urandom(8).hex()
    alice = create_user(testhost_ssh, homeserver, "alice", password)
    return asyncio.run(seed(homeserver, alice, password))


# --- 1. what runs, and deploy never changes it ------------------------------------------------


def test_the_held_release_runs_and_list_says_what_the_kit_would_install(homeserver, seeded, testhost_ssh):
    print(f"deployed with Synapse {OLD} in {homeserver.deploy_seconds:.0f} s")
    assert running(testhost_ssh, homeserver)["release"] == OLD
    listed = upgrade(homeserver, "--list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert f"synapse    {OLD} runs: up to date (the profile holds it there, matrix.version; the kit's current " \
           f"is {CURRENT})" in listed.stdout, listed.stdout  # fmt: skip
    assert "base       Debian bookworm: " in listed.stdout, listed.stdout


def test_a_deploy_with_a_newer_pin_changes_nothing_and_says_an_upgrade_is_pending(homeserver, seeded, testhost_ssh):
    before = running(testhost_ssh, homeserver)
    hold(homeserver, BROKEN)
    deployed = deploy(homeserver.inventories, GROUP, "--no-check")
    assert f"server: synapse {OLD} runs and the profile asks for {BROKEN}: the deploy keeps {OLD}" in deployed.stdout
    assert f"`commonstack upgrade {GROUP} --host server --only synapse`" in deployed.stdout
    assert "Nothing to change." in deployed.stdout, deployed.stdout
    assert running(testhost_ssh, homeserver) == before, "the deploy touched Synapse"
    listed = upgrade(homeserver, "--list")
    assert f"{OLD} runs; the kit would install {BROKEN}" in listed.stdout, listed.stdout


# --- 2. refused before any change ------------------------------------------------------------


def refused_before_any_change(homeserver, testhost_ssh, before: dict, result) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"server: synapse {OLD} -> {BROKEN}: refused" in result.stdout, result.stdout
    assert "Nothing was changed." in result.stdout
    assert running(testhost_ssh, homeserver) == before, "the host was changed"
    assert ssh(testhost_ssh, homeserver, f"ls /opt/synapse; ls -A {RECORDS} 2>/dev/null; true").split() == [
        "venv", f"venv-{OLD}"
    ], "something was written"


def test_a_red_check_refuses_the_upgrade_before_any_change(homeserver, testhost_ssh):
    before = running(testhost_ssh, homeserver)
    ssh(testhost_ssh, homeserver, "systemctl stop coturn")
    try:
        result = upgrade(homeserver, "--only", "synapse", "-y")
    finally:
        ssh(testhost_ssh, homeserver, "systemctl start coturn")
    refused_before_any_change(homeserver, testhost_ssh, before, result)
    assert "the stack's checks fail now (coturn: " in result.stdout and "--force" in result.stdout, result.stdout


def test_a_full_disk_refuses_the_upgrade_before_any_change(homeserver, testhost_ssh):
    before = running(testhost_ssh, homeserver)
    # The upgrade's dumps go to RECORDS: a small filesystem there, filled up.
    ssh(testhost_ssh, homeserver, f"mkdir -p {RECORDS} && mount -t tmpfs -o size=8M tmpfs {RECORDS} && "
                                  f"(dd if=/dev/zero of={RECORDS}/filler bs=1M count=16 2>/dev/null; true)")  # fmt: skip
    try:
        result = upgrade(homeserver, "--only", "synapse", "-y")
    finally:
        ssh(testhost_ssh, homeserver, f"umount {RECORDS} && rmdir {RECORDS}")
    refused_before_any_change(homeserver, testhost_ssh, before, result)
    assert "not enough free disk: the database dump (" in result.stdout and "0 MB are free" in result.stdout


# --- 3. a failing upgrade rolls back -------------------------------------------------------------


def test_an_upgrade_whose_health_gate_fails_is_rolled_back(homeserver, seeded, testhost_ssh):
    """The TEST-ONLY BROKEN RELEASE (see the module docstring) fails its gate; the rollback puts
    1.160.0, its database and config back; every message sent before is still there."""
    ssh(testhost_ssh, homeserver, f"mkdir -p /etc/matrix-synapse-test {BROKEN_DROP_IN.rsplit('/', 1)[0]} && "
                                  f"printf %s {shlex.quote(BROKEN_RELEASE)} > {BROKEN_DROP_IN} && systemctl daemon-reload "
                                  "&& systemctl restart matrix-synapse")  # fmt: skip
    try:
        result = upgrade(homeserver, "--only", "synapse", "-y")
    finally:
        ssh(testhost_ssh, homeserver, f"rm -f {BROKEN_DROP_IN} && systemctl daemon-reload")
    print(result.stdout)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"rolling back synapse to {OLD}: the health gate failed: synapse is healthy on localhost only" in result.stdout
    assert "server: synapse ROLLED BACK in " in result.stdout, result.stdout
    now = running(testhost_ssh, homeserver)
    assert now["release"] == OLD and not now["unfinished"], now
    journal = ssh(testhost_ssh, homeserver, f"cat $(ls -td {RECORDS}/history/synapse-* | head -n 1)/journal")
    assert journal.split()[::2] == [
        "begun", "prepared", "stopped", "dumped", "switched", "started",
        "rollback-begun", "rollback-stopped", "restored", "config-restored", "switched-back", "rollback-started",
        "rolled-back",
    ], journal  # fmt: skip
    assert NEW_DELTA not in seen_deltas(testhost_ssh, homeserver)
    messages_are_readable(homeserver, seeded)
    ssh(testhost_ssh, homeserver, "systemctl restart matrix-synapse")  # without the drop-in's config file
    healthy(homeserver)


# --- 4. a killed controller --------------------------------------------------------------------

KILL_AT = ["Record the upgrade", "Install Synapse", "Stop Synapse", "Save database synapse",
           f"Point /opt/synapse/venv at Synapse {BROKEN}", f"Start Synapse {BROKEN}", "health gate",
           "Record that the upgrade"]  # fmt: skip


def test_a_controller_killed_at_a_random_step_is_resumed_or_rolled_back(homeserver, seeded, testhost_ssh):
    step = random.choice(KILL_AT)
    print(f"killing the controller at: {step!r}")
    env = dict(os.environ, COMMONSTACK_INVENTORIES=str(homeserver.inventories))
    controller = subprocess.Popen(
        [sys.executable, "-m", "commonstack", "upgrade", GROUP, "--only", "synapse", "-y"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env,
        start_new_session=True,  # its own process group: the check runner's children die with it
    )  # fmt: skip
    seen = []
    for line in controller.stdout:
        seen.append(line)
        if step in line:
            os.killpg(controller.pid, signal.SIGKILL)
            break
    controller.wait(timeout=60)
    print("".join(seen))
    assert controller.returncode == -signal.SIGKILL, f"the upgrade ended before {step!r}:\n{''.join(seen)}"

    again = upgrade(homeserver, "--only", "synapse", "-y")
    print(again.stdout)
    assert again.returncode == 0 or "ROLLED BACK" in again.stdout, again.stdout + again.stderr
    assert "Resuming server: synapse" in again.stdout or "Upgrading server: synapse" in again.stdout
    now = running(testhost_ssh, homeserver)
    assert now["release"] in (OLD, BROKEN) and not now["unfinished"], now
    held = testhost_ssh(homeserver.testhost, f"systemctl is-active -q {MAINTENANCE_HOLDER}")
    assert held.returncode != 0, "the maintenance lock stayed held"
    messages_are_readable(homeserver, seeded)
    healthy(homeserver)


# --- 5. the upgrade to the kit's current release ----------------------------------------------------


def test_the_upgrade_to_the_current_release_migrates_and_keeps_every_message(homeserver, seeded, testhost_ssh):
    before = running(testhost_ssh, homeserver)
    assert NEW_DELTA not in seen_deltas(testhost_ssh, homeserver)
    hold(homeserver, None)  # the kit's current release
    planned = upgrade(homeserver, "--only", "synapse", "--dry-run")
    assert f"server: synapse {before['release']} -> {CURRENT}" in planned.stdout and "Nothing changed" in planned.stdout
    assert running(testhost_ssh, homeserver) == before
    planned_again = cli(homeserver.inventories, "plan", GROUP)
    assert planned_again.returncode == 0, planned_again.stdout + planned_again.stderr
    remembered = group(GROUP, homeserver.inventories).state_folder / "fact-commands"
    assert list(remembered.iterdir()), "a plan remembers the commands that read the host's facts"
    result = upgrade(homeserver, "--only", "synapse", "-y")
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not list(remembered.iterdir()), "an upgrade changed the host: its next plan finds them anew"
    assert "server: synapse UPGRADED in " in result.stdout and ", down " in result.stdout
    now = running(testhost_ssh, homeserver)
    assert now["release"] == CURRENT and now["pid"] != before["pid"] and not now["unfinished"], now
    assert NEW_DELTA in seen_deltas(testhost_ssh, homeserver), "the schema did not migrate"
    messages_are_readable(homeserver, seeded)
    results = check_results(homeserver.inventories, GROUP)
    assert not failed_checks(results), failed_checks(results)
    synapse = {r["check"]: r["outcome"] for r in results if r["layer"] == "synapse"}
    assert synapse["synapse runs the pinned release"] == synapse["federation api answers through https"] == "passed"
    # Done: nothing more to upgrade, a deploy changes nothing, the old release waits out its grace period.
    done = upgrade(homeserver, "--only", "synapse")
    assert f"server: synapse {CURRENT} runs: up to date" in done.stdout and "Nothing to upgrade." in done.stdout
    assert "Nothing to change." in deploy(homeserver.inventories, GROUP, "--no-check").stdout
    assert f"venv-{before['release']}" in ssh(testhost_ssh, homeserver, "ls /opt/synapse").split()


# --- 6. Debian's updates -----------------------------------------------------------------------------


def test_debian_updates_are_applied_within_the_release_and_checked(homeserver, testhost_ssh):
    listed = upgrade(homeserver, "--list").stdout
    result = upgrade(homeserver, "--only", "base", "-y")
    print(listed, result.stdout)
    if "no pending updates" in listed:
        assert result.returncode == 0 and "Debian: no pending updates" in result.stdout
        return
    assert "server: base UPDATED in " in result.stdout, result.stdout + result.stderr
    assert "Debian bookworm: no pending updates" in upgrade(homeserver, "--list").stdout
    assert ssh(testhost_ssh, homeserver, "cat /etc/debian_version").startswith("12."), "another Debian release"
    healthy(homeserver)
