"""Backups of the chat preset, and disaster recovery, on real test hosts.

One module, hosts shared in order (each test builds on the one before):

1. An SFTP repository on a test host of its own (another machine), a chat host (bookworm, 1 GB)
   backing up to it; data seeded with a real Matrix client (matrix-nio): two users, a room,
   messages, an uploaded image. `commonstack backup` makes a snapshot whose manifest carries the
   versions; `commonstack backups` lists it; the health checks pass.
2. Every bad case, each failing in one line with nothing lost: a wrong password, the repository
   unreachable, pg_dump failing (a lock held past its timeout), the staging disk full (a 64 kB
   tmpfs), a backup killed mid-way (the next one works), a snapshot that does not exist, and a
   snapshot from a newer Synapse than the kit installs (refused before any change).
3. The disaster: the chat host is destroyed; a new host at a new address is put in the profile,
   deployed and restored; the client reads the messages and downloads the image; the server's
   signing key is the same; every check passes.
4. `commonstack drill` passes on a throwaway host, and fails, saying so, once a pack of the
   repository is corrupted.

Needs root (test hosts), PyPI through the controller's CA (Synapse) and matrix-nio.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shlex
import time

import pytest

from commonstack import testhosts
from tests.integration.backups import SftpServer, kill_a_backup_midway, last_error_line, run_on, script, snapshot_ids
from tests.integration.conftest import new_host_name
from tests.integration.stacks import check_results, cli, deploy, failed_checks, write_group

nio = pytest.importorskip("nio", reason="matrix-nio is a test dependency (pip install matrix-nio)")
from tests.integration.matrix_client import client_of, wait_for_message  # noqa: E402  (needs nio)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GROUP = "chatbk"
DOMAIN = "chatbk.test"
CADDY_ROOT = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"
SIGNING_KEY = "/etc/matrix-synapse/signing.key"
ALICE, ALICE_PASSWORD = "alice", "correct horse battery staple"
# A real PNG (1x1, red), the "photo" of the room.
IMAGE = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8cfc0000003"
    "010100c9fe92ef0000000049454e44ae426082"
)


class Site:
    """The group, its hosts and what the tests learnt along the way."""

    def __init__(self, inventories, ssh, server: SftpServer):
        self.inventories, self.ssh, self.server = inventories, ssh, server
        self.host = None
        self.messages: list[str] = []
        self.room_id = ""
        self.image_url = ""
        self.signing_key = ""

    def write(self, host) -> None:
        """The group's profile for `host` (its address), backing up to the SFTP server."""
        self.host = host
        overrides = {"domain": DOMAIN, "admin_email": f"admin@{DOMAIN}",
                     "backup": {"enabled": True, "repository": self.server.repository(GROUP)}}  # fmt: skip
        group = write_group(self.inventories, GROUP, "chat", {"server": host}, overrides, memory_mb=1024)
        self.server.admit(group, ["server"])

    def run(self, command: str, timeout: float = 300) -> str:
        return run_on(self.ssh, self.host, command, timeout)

    def cli(self, *args: str, timeout: float = 1800):
        return cli(self.inventories, *args, timeout=timeout)

    def admin_password(self) -> str:
        import yaml

        return yaml.safe_load((self.inventories / GROUP / "secrets.yaml").read_text())["matrix_admin_password"]

    async def client(self, user: str, password: str) -> nio.AsyncClient:
        root = self.run(f"cat {CADDY_ROOT}")
        return await client_of(DOMAIN, f"matrix.{DOMAIN}", self.host.address, root, f"@{user}:{DOMAIN}", password)


@pytest.fixture(scope="module")
def site(testhosts_state, tmp_path_factory, testhost_ssh):
    hosts = []
    try:
        repository_host = testhosts.up(new_host_name())
        hosts.append(repository_host)
        server = SftpServer(repository_host, testhost_ssh)
        server.prepare()
        chat = testhosts.up(new_host_name(), memory="1G", trust_controller_ca=True)
        hosts.append(chat)
        site = Site(tmp_path_factory.mktemp("backup-inventories"), testhost_ssh, server)
        site.write(chat)
        started = time.monotonic()
        deploy(site.inventories, GROUP)
        print(f"chat host deployed in {time.monotonic() - started:.0f} s")
        site.hosts = hosts
        yield site
    finally:
        for host in hosts:
            testhosts.down(host.name)


# --- 1. a backup of real data -------------------------------------------------------------------


def test_the_repository_is_created_and_the_checks_ask_for_a_first_backup(site):
    results = check_results(site.inventories, GROUP, "--only", "backup")
    by_check = {r["check"]: r for r in results}
    assert by_check["repository answers"]["outcome"] == "passed", by_check
    assert by_check["backup timers are active"]["outcome"] == "passed", by_check
    first = by_check["last backup succeeded within 26 hours"]
    assert first["outcome"] == "failed" and "`commonstack backup GROUP` makes one now" in first["message"], first
    planned = site.cli("plan", GROUP)
    assert re.search(r": unchanged — 0 of \d+ operations would change", planned.stdout), planned.stdout


def test_seeded_chat_is_backed_up_with_a_manifest_of_versions(site):
    site.run(f"/opt/synapse/venv/bin/register_new_matrix_user --no-admin -u {ALICE} -p {shlex.quote(ALICE_PASSWORD)} "
             "-c /etc/matrix-synapse/homeserver.yaml http://127.0.0.1:8008")  # fmt: skip

    async def seed() -> None:
        admin, alice = await site.client("admin", site.admin_password()), await site.client(ALICE, ALICE_PASSWORD)
        try:
            created = await admin.room_create(name="tenants' meeting", invite=[f"@{ALICE}:{DOMAIN}"])
            assert isinstance(created, nio.RoomCreateResponse), created
            site.room_id = created.room_id
            assert isinstance(await alice.join(site.room_id), nio.JoinResponse)
            for client, body in ((admin, "the meeting is on Tuesday"), (alice, "I will bring the minutes")):
                site.messages.append(body)
                await client.room_send(site.room_id, "m.room.message", {"msgtype": "m.text", "body": body})
            uploaded, _ = await alice.upload(lambda *_: IMAGE, content_type="image/png", filename="flyer.png",
                                             filesize=len(IMAGE))  # fmt: skip
            assert isinstance(uploaded, nio.UploadResponse), uploaded
            site.image_url = uploaded.content_uri
            await alice.room_send(site.room_id, "m.room.message",
                                  {"msgtype": "m.image", "body": "flyer.png", "url": site.image_url})  # fmt: skip
            await wait_for_message(admin, site.room_id, "flyer.png", timeout=30)
        finally:
            for client in (admin, alice):
                await client.close()

    asyncio.run(seed())
    site.signing_key = site.run(f"cat {SIGNING_KEY}")

    started = time.monotonic()
    result = site.cli("backup", GROUP)
    print(f"first backup through the CLI: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "synapse: pg_dump of database synapse" in result.stdout and re.search(r"saved snapshot [0-9a-f]{8}", result.stdout)
    assert "Keep these OFF the host too" in result.stdout and "restic_password" in result.stdout

    listed = site.cli("backups", GROUP)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "server: 1 snapshot(s)" in listed.stdout and "routine" in listed.stdout, listed.stdout
    assert re.search(r"Synapse 1\.\d+\.\d+ \(schema \d+\), PostgreSQL 15\.\d+, Debian bookworm amd64", listed.stdout)
    assert "caddy, synapse" in listed.stdout, listed.stdout

    checked = script(site.ssh, site.host, "check")  # what the weekly timer runs
    assert checked.returncode == 0 and "restic check: no error in the repository" in checked.stderr, checked.stderr
    results = check_results(site.inventories, GROUP)
    assert not failed_checks(results), failed_checks(results)
    assert {r["check"] for r in results if r["layer"] == "backup" and r["outcome"] == "passed"} == {
        "backup timers are active", "backup services are sandboxed", "last backup succeeded within 26 hours",
        "repository answers", "last repository check passed"}  # fmt: skip


def test_secrets_never_appear_in_the_output(site):
    import yaml

    secrets = yaml.safe_load((site.inventories / GROUP / "secrets.yaml").read_text())
    output = ""
    for command in (("backups", GROUP), ("backups", GROUP, "--keys")):
        result = site.cli(*command)
        output += result.stdout + result.stderr
    assert not [name for name, value in secrets.items() if value in output]
    assert output.count("ssh-ed25519 ") == 1, "--keys prints the host's public key"


# --- 2. bad cases ---------------------------------------------------------------------------------


def test_a_wrong_password_fails_in_one_line(site):
    before = snapshot_ids(site.ssh, site.host)
    site.run("cp /etc/commonstack/restic-password /root/password.saved && echo wrong > /etc/commonstack/restic-password")
    try:
        result = site.cli("backup", GROUP)
    finally:
        site.run("mv /root/password.saved /etc/commonstack/restic-password")
    assert result.returncode == 1
    assert "does not open with restic_password from secrets.yaml (wrong password)" in result.stderr, result.stderr
    assert snapshot_ids(site.ssh, site.host) == before
    assert site.run("systemctl is-active matrix-synapse").strip() == "active"


def test_an_unreachable_repository_fails_in_one_line(site):
    site.run(f"ip route add blackhole {site.server.host.address}/32")
    try:
        result = site.cli("backup", GROUP)
        checked = check_results(site.inventories, GROUP, "--only", "backup")
    finally:
        site.run(f"ip route del blackhole {site.server.host.address}/32")
    assert result.returncode == 1
    assert f"the repository {site.server.repository(GROUP)} does not answer" in result.stderr, result.stderr
    probe = next(r for r in checked if r["check"] == "repository answers")
    assert probe["outcome"] == "failed" and "does not answer" in probe["message"], probe


def test_a_failing_pg_dump_fails_the_backup(site):
    before = snapshot_ids(site.ssh, site.host)
    # A real pg_dump failure: a lock on one of Synapse's tables, held past pg_dump's lock timeout.
    locked = ("runuser -u postgres -- psql -d synapse -tAc \"SELECT 1 FROM pg_locks WHERE granted "
              "AND mode = 'AccessExclusiveLock' AND relation = 'room_memberships'::regclass\" | grep -q 1")
    locker = ("nohup runuser -u postgres -- psql -d synapse -c "
              "'BEGIN; LOCK TABLE room_memberships IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(40)' "
              f">/dev/null 2>&1 & for i in $(seq 100); do {locked} && break; sleep 0.2; done; {locked}")  # fmt: skip
    site.run(locker)
    result = site.ssh(site.host, "COMMONSTACK_PG_LOCK_WAIT=3s /usr/local/sbin/commonstack-backup run", timeout=300)
    assert result.returncode == 1
    line = last_error_line(result)
    assert line == "backup of server failed: no snapshot was saved; every service runs as before", result.stderr
    assert "error: pg_dump of database synapse failed: pg_dump: error: query failed: ERROR:  canceling statement" in result.stderr
    assert snapshot_ids(site.ssh, site.host) == before
    assert site.run("ls -A /var/backups/commonstack") == ""
    site.run("while pgrep -f 'pg_slee[p]' >/dev/null; do sleep 1; done", timeout=60)  # [p]: not this shell


def test_a_full_disk_fails_the_backup_and_leaves_nothing_behind(site):
    before = snapshot_ids(site.ssh, site.host)
    site.run("mount -t tmpfs -o size=64k tmpfs /var/backups/commonstack")
    try:
        result = script(site.ssh, site.host, "run")
        left = site.run("ls -A /var/backups/commonstack")
    finally:
        site.run("umount /var/backups/commonstack")
    assert result.returncode == 1
    assert "No space left on device" in result.stderr, result.stderr
    assert left == "", "staged files were left behind"
    assert snapshot_ids(site.ssh, site.host) == before
    assert site.run("systemctl is-active matrix-synapse postgresql caddy").split() == ["active"] * 3


def test_a_backup_killed_midway_does_not_stop_the_next(site):
    # Killed outright while restic runs: no trap can run, its restic lock stays in the repository.
    kill_a_backup_midway(site.ssh, site.host)
    assert site.run("test -e /var/lib/commonstack/backup/running && echo left").strip() == "left"
    result = script(site.ssh, site.host, "run")
    assert result.returncode == 0, result.stderr
    assert "did not finish: cleaning up after it" in result.stderr
    assert "saved snapshot" in result.stderr


def test_a_snapshot_that_does_not_exist_is_refused(site):
    result = site.cli("restore", GROUP, "--snapshot", "deadbeef", "--yes")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: --snapshot deadbeef is no snapshot of host server in the repository" in result.stderr


def test_a_snapshot_of_a_newer_synapse_is_refused_before_any_change(site):
    # A snapshot as a newer kit would make it: the same data, its manifest saying Synapse 99.0.0.
    staging = "/var/backups/commonstack"
    site.run(f"mkdir -p {staging} && jq -n '{{format: 1, kit: \"0.1.0\", layers: [\"synapse\"], "
             "debian: {codename: \"bookworm\"}, versions: {synapse: {version: \"99.0.0\", schema: 999}}}' "
             f"> {staging}/manifest.json && /usr/local/sbin/commonstack-backup restic backup --tag commonstack,future "
             f"--host server {staging} && rm -rf {staging}/*")  # fmt: skip
    future = next(s for s in site.run("/usr/local/sbin/commonstack-backup restic snapshots --json --tag future")
                  .split('"id":"')[1:]).split('"')[0]  # fmt: skip
    synapse_before = site.run("runuser -u postgres -- psql -XAtc 'SELECT count(*) FROM events' synapse")
    result = site.cli("restore", GROUP, "--snapshot", future[:8], "--yes")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "holds data of Synapse 99.0.0 (this kit installs" in result.stderr and "Nothing was changed" in result.stderr
    assert site.run("runuser -u postgres -- psql -XAtc 'SELECT count(*) FROM events' synapse") == synapse_before
    site.run(f"/usr/local/sbin/commonstack-backup restic forget {future}")


def test_a_restore_that_fails_its_checks_puts_everything_back(site):
    """A message written after the backup must survive a restore that fails half-way."""
    later = "written after the backup"

    async def send_and_read(send: bool) -> None:
        alice = await site.client(ALICE, ALICE_PASSWORD)
        try:
            if send:
                await alice.room_send(site.room_id, "m.room.message", {"msgtype": "m.text", "body": later})
            await wait_for_message(alice, site.room_id, later, timeout=30)
        finally:
            await alice.close()

    asyncio.run(send_and_read(send=True))
    # HTTPS stops answering from outside (a firewall mistake): Caddy's checks fail after the swap.
    site.run("nft insert rule inet commonstack input tcp dport 443 drop")
    try:
        result = site.cli("restore", GROUP, "--yes")
    finally:
        site.run("nft flush ruleset && nft -f /etc/nftables.conf")
    assert result.returncode == 1, result.stdout + result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: server: the restored data did not pass: caddy: "), line
    assert line.endswith("the data from before the restore is back"), line
    asyncio.run(send_and_read(send=False))
    assert site.run("ls -d /var/lib/caddy.commonstack-before-restore /var/lib/commonstack/restore 2>/dev/null; "
                    "runuser -u postgres -- psql -XAtc \"SELECT datname FROM pg_database WHERE datname LIKE '%restore%'\"; true") == ""  # fmt: skip
    kinds = site.run("/usr/local/sbin/commonstack-backup restic snapshots --json --tag commonstack,pre-restore")
    assert '"pre-restore"' in kinds, "the data from before the restore was saved first"


# --- 3. the disaster ------------------------------------------------------------------------------


def test_a_new_host_gets_everything_back(site):
    old = site.host
    testhosts.down(old.name)  # the VPS is gone
    new = testhosts.up(new_host_name(), memory="1G", trust_controller_ca=True)
    site.hosts.append(new)
    assert new.address != old.address
    site.write(new)
    started = time.monotonic()
    deploy(site.inventories, GROUP, "--no-check")
    deployed = time.monotonic()
    restored = site.cli("restore", GROUP, "--yes")
    print(f"new host deployed in {deployed - started:.0f} s, restored in {time.monotonic() - deployed:.0f} s")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert re.search(r"server: restored snapshot [0-9a-f]{8} .*: caddy, synapse; \d+ checks passed", restored.stdout)
    assert "synapse.users" in restored.stdout

    assert site.run(f"cat {SIGNING_KEY}") == site.signing_key, "the server's identity changed"

    async def read_back() -> None:
        alice = await site.client(ALICE, ALICE_PASSWORD)
        try:
            for body in [*site.messages, "flyer.png"]:
                await wait_for_message(alice, site.room_id, body, timeout=30)
            downloaded = await alice.download(site.image_url)
            assert isinstance(downloaded, nio.DownloadResponse), downloaded
            assert hashlib.sha256(downloaded.body).digest() == hashlib.sha256(IMAGE).digest()
        finally:
            await alice.close()

    asyncio.run(read_back())
    results = check_results(site.inventories, GROUP)
    assert not failed_checks(results), failed_checks(results)
    assert site.run("ls -d /var/lib/matrix-synapse/media/*.commonstack-before-restore 2>/dev/null; "
                    "runuser -u postgres -- psql -XAtc \"SELECT datname FROM pg_database WHERE datname LIKE '%restore%'\"; true") == ""  # fmt: skip


# --- 4. the drill ---------------------------------------------------------------------------------


def test_the_drill_passes(site):
    started = time.monotonic()
    result = site.cli("drill", GROUP, timeout=3600)
    print(f"drill: {time.monotonic() - started:.0f} s")
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = result.stdout.strip().splitlines()[-1]
    assert re.match(r"drill of server: PASSED — snapshot [0-9a-f]{8} \(.* old, \d+ MB\) restored onto a throwaway "
                    r"Debian bookworm host in \d+ min: caddy, synapse; \d+ health checks passed; counts as at the backup: "
                    r"synapse\.users 2, synapse\.rooms 1, synapse\.events \d+, synapse\.local_media_repository 1", verdict), verdict
    assert not [h for h in testhosts.list_hosts() if h.name.startswith("drill-")], "the throwaway host stayed"


def test_the_drill_fails_and_says_so_on_a_corrupted_pack(site):
    # A backup whose only new data is 2 MB of random media: the newest large pack is that
    # snapshot's, and the drill must read it (the largest pack may be garbage a killed run left).
    site.run("head -c 2000000 /dev/urandom > /var/lib/matrix-synapse/media/local_content/drill-check")
    assert script(site.ssh, site.host, "run").returncode == 0
    size, pack = site.server.newest_pack(GROUP)
    site.server.run(f"cp -p {pack} /root/pack.saved && printf 'CORRUPTED' | "
                    f"dd of={pack} bs=1 seek={size // 2} conv=notrunc status=none")  # fmt: skip
    try:
        result = site.cli("drill", GROUP, timeout=3600)
    finally:
        site.server.run(f"cp -p /root/pack.saved {pack}")
    assert result.returncode == 1, result.stdout + result.stderr
    verdict = result.stdout.strip().splitlines()[-1]
    assert verdict.startswith("drill of server: FAILED — ") and "nothing was restored" in verdict, verdict
    assert os.environ.get("COMMONSTACK_CHECK_HOSTS_FILE") is None
