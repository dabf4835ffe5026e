"""Matrix on real test hosts: the chat preset deployed on two fresh hosts (two groups, alpha.test
and beta.test, deployed in parallel), its health checks, a second plan that changes nothing, a
changed server name refused before any change, a real client (matrix-nio) through HTTPS, and
federation between the two homeservers.

How names and trust are arranged, with no DNS and no public CA:

- The client (this test process) resolves the hosts' names with an aiohttp resolver that knows
  only them (`StaticResolver`): nothing else on this machine is changed. It trusts each host's
  Caddy root (tls.mode internal), read from the host.
- For federation, each host gets the other's names in /etc/hosts, and a Synapse config file of
  the test's own (`FEDERATION_OVERRIDE`, loaded by a systemd drop-in that adds a second
  --config-path) that stands in for the internet: trust the other host's Caddy root
  (federation_custom_ca_list), allow its private address (ip_range_whitelist: Synapse refuses
  private ranges by default), and fetch signing keys from the servers themselves
  (trusted_key_servers: [] -- no traffic to matrix.org). The deploy manages none of these files,
  so a later deploy still changes nothing.

Needs root (test hosts), PyPI through the controller's CA (pip on the hosts), and matrix-nio.
"""

from __future__ import annotations

import asyncio
import shlex
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from commonstack import testhosts
from commonstack.testhosts import TestHost
from tests.integration.conftest import new_host_name
from tests.integration.matrix_client import CADDY_ROOT, Homeserver, logged_in, wait_for_message
from tests.integration.stacks import check_results, cli, deploy, failed_checks, write_group

nio = pytest.importorskip("nio", reason="matrix-nio is a test dependency (pip install matrix-nio)")
aiohttp = pytest.importorskip("aiohttp")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OVERRIDE_DIR = "/etc/matrix-synapse-test"
FEDERATION_OVERRIDE = """\
# Test hosts only (tests/integration/test_matrix.py): what the internet gives real homeservers.
federation_custom_ca_list: [{override_dir}/peer-ca.crt]
ip_range_whitelist: ["10.231.0.0/16"]
trusted_key_servers: []
"""
FEDERATION_DROP_IN = (
    "[Service]\nExecStart=\nExecStart=/opt/synapse/venv/bin/python -m synapse.app.homeserver"
    " --config-path=/etc/matrix-synapse/homeserver.yaml --config-path={override_dir}/federation.yaml\n"
)


def ssh(testhost_ssh, host: TestHost, command: str, timeout: float = 120) -> str:
    result = testhost_ssh(host, command, timeout=timeout)
    assert result.returncode == 0, f"{command}: {result.stderr or result.stdout}"
    return result.stdout


@pytest.fixture(scope="module")
def homeservers(testhosts_state, tmp_path_factory, testhost_ssh) -> dict[str, Homeserver]:
    """Two fresh 1 GB hosts with the chat preset, deployed in parallel (two groups)."""
    inventories = tmp_path_factory.mktemp("matrix-inventories")
    servers: dict[str, Homeserver] = {}
    try:
        for group in ("alpha", "beta"):
            testhost = testhosts.up(new_host_name(), memory="1G", trust_controller_ca=True)
            servers[group] = Homeserver(group, f"{group}.test", testhost, inventories)
            overrides = {"domain": f"{group}.test", "admin_email": f"admin@{group}.test"}
            write_group(inventories, group, "chat", {"server": testhost}, overrides, memory_mb=1024)

        def timed_deploy(server: Homeserver) -> None:
            started = time.monotonic()
            deploy(inventories, server.group)
            server.deploy_seconds = time.monotonic() - started

        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(timed_deploy, servers.values()))
        for server in servers.values():
            server.caddy_root = ssh(testhost_ssh, server.testhost, f"cat {CADDY_ROOT}")
        yield servers
    finally:
        for server in servers.values():
            testhosts.down(server.testhost.name)


def test_chat_preset_deploys_and_its_checks_pass(homeservers):
    for server in homeservers.values():
        print(f"{server.group}: deployed in {server.deploy_seconds:.0f} s")
    with ThreadPoolExecutor(len(homeservers)) as pool:
        results = dict(zip(homeservers, pool.map(
            lambda s: check_results(s.inventories, s.group), homeservers.values())))
    for group, checks in results.items():
        assert not failed_checks(checks), f"{group}: {failed_checks(checks)}"
        matrix = {r["check"] for r in checks if r["layer"] in ("synapse", "coturn") and r["outcome"] == "passed"}
        assert {"admin can log in", "turn credentials are handed out and accepted",
                "well known documents delegate to synapse"} <= matrix, (group, matrix)


def test_a_second_deploy_changes_nothing(homeservers):
    server = homeservers["alpha"]
    result = cli(server.inventories, "plan", server.group)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 of " in result.stdout and "operations would change" in result.stdout, result.stdout
    assert "unchanged" in result.stdout, result.stdout


def test_a_changed_server_name_is_refused_before_any_change(homeservers):
    server = homeservers["alpha"]
    stack_file = server.inventories / server.group / "stack.yaml"
    original = stack_file.read_text()
    profile = yaml.safe_load(original)
    profile.setdefault("matrix", {})["server_name"] = "elsewhere.test"
    stack_file.write_text(yaml.safe_dump(profile, sort_keys=False))
    try:
        result = cli(server.inventories, "deploy", server.group, "--yes")
    finally:
        stack_file.write_text(original)
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if "ServerNameChanged" in line]
    assert "was set up as alpha.test" in line and "set matrix.server_name: alpha.test" in line, line
    assert "operations changed" not in result.stdout, "the host was changed: " + result.stdout


def test_a_client_logs_in_creates_a_room_and_reads_its_message(homeservers):
    server = homeservers["alpha"]

    async def round_trip() -> None:
        client = await logged_in(server)
        try:
            created = await client.room_create(name="commonstack client test")
            assert isinstance(created, nio.RoomCreateResponse), created
            body = f"hello from matrix-nio {time.time()}"
            sent = await client.room_send(created.room_id, "m.room.message", {"msgtype": "m.text", "body": body})
            assert isinstance(sent, nio.RoomSendResponse), sent
            await wait_for_message(client, created.room_id, body, timeout=10)
        finally:
            await client.logout()
            await client.close()

    asyncio.run(round_trip())


@pytest.fixture(scope="module")
def federating(homeservers, testhost_ssh) -> dict[str, Homeserver]:
    """Each host knows the other's names and trusts its CA (see the module docstring)."""
    pairs = [(homeservers["alpha"], homeservers["beta"]), (homeservers["beta"], homeservers["alpha"])]
    for server, peer in pairs:
        override = FEDERATION_OVERRIDE.format(override_dir=OVERRIDE_DIR)
        drop_in = FEDERATION_DROP_IN.format(override_dir=OVERRIDE_DIR)
        commands = [
            f"echo {shlex.quote(f'{peer.testhost.address} {peer.server_name} {peer.hostname}')} >> /etc/hosts",
            f"mkdir -p {OVERRIDE_DIR} /etc/systemd/system/matrix-synapse.service.d",
            f"printf %s {shlex.quote(peer.caddy_root)} > {OVERRIDE_DIR}/peer-ca.crt",
            f"printf %s {shlex.quote(override)} > {OVERRIDE_DIR}/federation.yaml",
            f"printf %s {shlex.quote(drop_in)} > /etc/systemd/system/matrix-synapse.service.d/50-test-federation.conf",
            "systemctl daemon-reload",
            "systemctl restart matrix-synapse",
        ]
        ssh(testhost_ssh, server.testhost, " && ".join(commands))
    return homeservers


def test_two_homeservers_federate(federating):
    alpha, beta = federating["alpha"], federating["beta"]

    async def conversation() -> dict[str, float]:
        host_client, guest_client = await logged_in(alpha), await logged_in(beta)
        try:
            created = await host_client.room_create(name="federation test", invite=[beta.admin])
            assert isinstance(created, nio.RoomCreateResponse), created
            joined = None
            for _ in range(30):  # the invite travels from alpha to beta first
                joined = await guest_client.join(created.room_id)
                if isinstance(joined, nio.JoinResponse):
                    break
                await asyncio.sleep(1)
            assert isinstance(joined, nio.JoinResponse), f"{beta.admin} could not join: {joined}"
            hello = f"hello beta from alpha {time.time()}"
            await host_client.room_send(created.room_id, "m.room.message", {"msgtype": "m.text", "body": hello})
            to_beta = await wait_for_message(guest_client, created.room_id, hello)
            answer = f"hello alpha from beta {time.time()}"
            await guest_client.room_send(created.room_id, "m.room.message", {"msgtype": "m.text", "body": answer})
            to_alpha = await wait_for_message(host_client, created.room_id, answer)
            return {"alpha -> beta": to_beta, "beta -> alpha": to_alpha}
        finally:
            for client in (host_client, guest_client):
                await client.logout()
                await client.close()

    delays = asyncio.run(conversation())
    print("federation delivery:", ", ".join(f"{k} {v:.1f} s" for k, v in delays.items()))


# --- turning services off (runs last: it changes beta's stack) ------------------------------------


def answers_from_outside(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=2).close()
        return True
    except OSError:
        return False


def test_turning_turn_off_stops_coturn_and_closes_its_ports(homeservers, testhost_ssh):
    server = homeservers["beta"]
    overrides = {"domain": "beta.test", "admin_email": "admin@beta.test", "matrix": {"turn": {"enabled": False}}}
    write_group(server.inventories, server.group, "chat", {"server": server.testhost}, overrides, memory_mb=1024)
    assert answers_from_outside(server.testhost.address, 3478)

    planned = cli(server.inventories, "plan", server.group)
    assert "    Turn off coturn: stop and disable coturn\n" in planned.stdout, planned.stdout
    assert "server: coturn is off in the profile and would be stopped" in planned.stdout, planned.stdout

    deployed = deploy(server.inventories, server.group)
    assert "server: coturn is off in the profile and is stopped" in deployed.stdout, deployed.stdout
    states = ssh(testhost_ssh, server.testhost, "systemctl is-active coturn coturn-certificate.timer; "
                 "systemctl is-enabled coturn coturn-certificate.timer; true")  # fmt: skip
    assert states.split() == ["inactive", "inactive", "disabled", "disabled"], states
    assert not answers_from_outside(server.testhost.address, 3478), "TURN's port still answers from outside"
    assert "dport 3478" not in ssh(testhost_ssh, server.testhost, "nft list ruleset")

    results = check_results(server.inventories, server.group)
    assert not failed_checks(results), failed_checks(results)
    assert not [r for r in results if r["layer"] == "coturn"], "coturn's checks ran on a host without it"
    again = cli(server.inventories, "deploy", server.group, "--yes", "--no-check")
    assert again.returncode == 0 and "Nothing to change." in again.stdout, again.stdout
    assert "coturn is off" not in again.stdout, "said again once coturn was off"


def test_moving_to_nextcloud_keeps_matrix_data_until_purged(homeservers, testhost_ssh):
    """The group gives up chat for files: Synapse is stopped and its data kept; `--purge` asks,
    then deletes exactly Synapse's data and database, and nothing of what Nextcloud uses."""
    server = homeservers["beta"]
    overrides = {"domain": "beta.test", "admin_email": "admin@beta.test", "matrix": {"enabled": False},
                 "nextcloud": {"enabled": True, "install": "prerequisites"}}  # fmt: skip
    write_group(server.inventories, server.group, "chat", {"server": server.testhost}, overrides, memory_mb=1024)
    moved = deploy(server.inventories, server.group, "--no-check")
    kept = "synapse is off in the profile and is stopped; its data stays in /var/lib/matrix-synapse, /etc/matrix-synapse"
    assert kept in moved.stdout, moved.stdout
    assert ssh(testhost_ssh, server.testhost, "systemctl is-active matrix-synapse; true").strip() == "inactive"
    assert ssh(testhost_ssh, server.testhost, "test -s /etc/matrix-synapse/signing.key && echo kept").strip() == "kept"

    asked = cli(server.inventories, "deploy", server.group, "--purge", "--no-check")  # no terminal: no yes
    assert asked.returncode == 1, asked.stdout + asked.stderr
    assert "--purge deletes, for good:" in asked.stdout and "delete /var/lib/matrix-synapse" in asked.stdout
    assert "delete database synapse" in asked.stdout, asked.stdout
    assert ssh(testhost_ssh, server.testhost, "test -d /var/lib/matrix-synapse && echo kept").strip() == "kept"

    purged = cli(server.inventories, "deploy", server.group, "--purge", "--yes", "--no-check")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    left = ssh(testhost_ssh, server.testhost,
               "ls -d /var/lib/matrix-synapse /etc/matrix-synapse 2>/dev/null; "
               "runuser -u postgres -- psql -XAtc 'SELECT datname FROM pg_database ORDER BY 1'")  # fmt: skip
    assert left.split() == ["nextcloud", "postgres", "template0", "template1"], left
    results = check_results(server.inventories, server.group)
    assert not failed_checks(results), failed_checks(results)
    again = cli(server.inventories, "deploy", server.group, "--purge", "--yes", "--no-check")
    assert "Nothing to change." in again.stdout, again.stdout
