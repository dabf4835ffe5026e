"""Benchmark the backups of a seeded chat host: time and size of the first and of an incremental
backup, the restore's time, and each service's downtime during a backup.

    python bench/bench_backup.py [--messages 300] [--media-mb 20]

Needs root, PyPI (Synapse on the host, through the controller's CA) and matrix-nio. Boots two
local test hosts (temporary state dir): an SFTP repository and a chat host (1 GB, chat preset,
tls.mode internal), deploys through the CLI, seeds it with a matrix-nio client (messages and
uploaded media of random bytes, which neither compress nor deduplicate), then:

- first backup: `commonstack backup` (wall time through the CLI) and the repository's growth
  (du -sb on the repository server);
- incremental: the same after another tenth of the messages;
- downtime: while each backup runs, this machine asks every 0.2 s, through Caddy, Synapse's client
  API (/_matrix/client/versions) and Caddy itself, and counts the seconds without an answer;
  coturn's TCP port likewise;
- restore: `commonstack restore --yes` of the latest snapshot onto the same host (pre-restore
  snapshot, fetch, swap, checks, commit), wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

from commonstack import testhosts
from commonstack.testhosts.paths import STATE_ENV
from commonstack.testhosts.preflight import require_support

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.integration.backups import SftpServer  # noqa: E402
from tests.integration.stacks import cli, write_group  # noqa: E402

GROUP, DOMAIN = "benchbk", "benchbk.test"
CADDY_ROOT = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"
INTERVAL = 0.2


def ssh_run(host, command: str, timeout: float = 600) -> str:
    done = _completed(host, command, timeout)
    if done.returncode != 0:
        raise SystemExit(f"{command}: {done.stderr}")
    return done.stdout


class Downtime:
    """Polls each service from outside while a backup runs; seconds without an answer."""

    def __init__(self, address: str, root: str):
        context = ssl.create_default_context(cadata=root)
        self.probes = {
            "Synapse (client API via Caddy)": lambda: self._https(address, f"matrix.{DOMAIN}", "/_matrix/client/versions", context),
            "Caddy (.well-known)": lambda: self._https(address, DOMAIN, "/.well-known/matrix/client", context),
            "coturn (TCP 3478)": lambda: self._tcp(address, 3478),
        }  # fmt: skip
        self.missed = {name: 0 for name in self.probes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _https(address: str, name: str, path: str, context) -> bool:
        import http.client

        connection = http.client.HTTPSConnection(address, 443, timeout=1, context=context)
        connection._tunnel_host = None
        try:
            connection.sock = context.wrap_socket(socket.create_connection((address, 443), timeout=1), server_hostname=name)
            connection.request("GET", path, headers={"Host": name})
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    @staticmethod
    def _tcp(address: str, port: int) -> bool:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return True
        except OSError:
            return False

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            for name, probe in self.probes.items():
                if not probe():
                    self.missed[name] += 1
            self._stop.wait(max(0.0, INTERVAL - (time.monotonic() - started)))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def seconds(self) -> dict[str, float]:
        return {name: missed * INTERVAL for name, missed in self.missed.items()}


async def seed(host, root: str, password: str, messages: int, media_mb: int, tag: str) -> None:
    import nio

    from tests.integration.matrix_client import client_of

    client = await client_of(DOMAIN, f"matrix.{DOMAIN}", host.address, root, f"@admin:{DOMAIN}", password)
    try:
        # Seeding at full speed: Synapse's admin API (on loopback: Caddy does not serve it) lifts
        # the admin's message rate limit.
        url = f"http://127.0.0.1:8008/_synapse/admin/v1/users/{quote(client.user_id)}/override_ratelimit"
        ssh_run(host, f"curl -fsS -X POST -H 'Authorization: Bearer {client.access_token}' "
                      f"-d '{{\"messages_per_second\": 0, \"burst_count\": 0}}' {url}")  # fmt: skip
        rooms = await client.joined_rooms()
        room = rooms.rooms[0] if rooms.rooms else (await client.room_create(name="bench")).room_id
        for number in range(messages):
            await client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": f"{tag} message {number}"})
        for number in range(media_mb):
            data = os.urandom(1024 * 1024)
            uploaded, _ = await client.upload(lambda *_: data, content_type="application/octet-stream",
                                              filename=f"{tag}-{number}.bin", filesize=len(data))  # fmt: skip
            assert isinstance(uploaded, nio.UploadResponse), uploaded
    finally:
        await client.close()


def timed_backup(inventories: Path, server: SftpServer, address: str, root: str) -> tuple[float, int, dict]:
    before = server.size(GROUP)
    with Downtime(address, root) as downtime:
        started = time.monotonic()
        result = cli(inventories, "backup", GROUP)
        elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(result.stdout + result.stderr)
    return elapsed, server.size(GROUP) - before, downtime.seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--media-mb", type=int, default=20)
    args = parser.parse_args()
    require_support()
    import yaml

    with tempfile.TemporaryDirectory(prefix="bench-backup-") as work:
        os.environ[STATE_ENV] = str(Path(work) / "testhosts")
        inventories = Path(work) / "inventories"
        hosts = []
        try:
            repository_host = testhosts.up("bkbench-repo")
            hosts.append(repository_host)
            server = SftpServer(repository_host, _completed)
            server.prepare()
            chat = testhosts.up("bkbench-chat", memory="1G", trust_controller_ca=True)
            hosts.append(chat)
            overrides = {"domain": DOMAIN, "admin_email": f"admin@{DOMAIN}",
                         "backup": {"enabled": True, "repository": server.repository(GROUP)}}  # fmt: skip
            group = write_group(inventories, GROUP, "chat", {"server": chat}, overrides, memory_mb=1024)
            server.admit(group, ["server"])
            deployed = cli(inventories, "deploy", GROUP, "--yes", "--no-check")
            if deployed.returncode != 0:
                raise SystemExit(deployed.stdout + deployed.stderr)
            root = ssh_run(chat, f"cat {CADDY_ROOT}")
            password = yaml.safe_load(group.secrets_file.read_text())["matrix_admin_password"]
            asyncio.run(seed(chat, root, password, args.messages, args.media_mb, "first"))

            first = timed_backup(inventories, server, chat.address, root)
            asyncio.run(seed(chat, root, password, args.messages // 10, 1, "second"))
            second = timed_backup(inventories, server, chat.address, root)
            started = time.monotonic()
            restored = cli(inventories, "restore", GROUP, "--yes")
            restore_seconds = time.monotonic() - started
            if restored.returncode != 0:
                raise SystemExit(restored.stdout + restored.stderr)
        finally:
            for host in hosts:
                testhosts.down(host.name)

    print(f"seeded: {args.messages} messages, {args.media_mb} MB of media (random bytes)")
    for label, (seconds, added, downtime) in (("first backup", first), ("incremental backup", second)):
        print(f"{label}: {seconds:.1f} s through the CLI, repository +{added / 1e6:.1f} MB")
        for service, missed in downtime.items():
            print(f"  {service}: {missed:.1f} s without an answer")
    print(f"ratio incremental/first: time {second[0] / first[0]:.2f}, size {second[1] / max(first[1], 1):.3f}")
    print(f"restore of the latest snapshot onto the same host (pre-restore snapshot, fetch, swap, checks): "
          f"{restore_seconds:.1f} s")  # fmt: skip


def _completed(host, command: str, timeout: float):
    import subprocess

    return subprocess.run(
        ["ssh", "-i", str(host.key_path), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", f"root@{host.address}", command],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


if __name__ == "__main__":
    main()
