"""Helpers for the backup tests: an SFTP backup repository on a test host of its own (another
machine, like a friend's Pi or a storage box), and what a group needs to back up to it."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from commonstack.inventories.backup_keys import SEED_SECRET, backup_key
from commonstack.inventories.groups import Group
from commonstack.inventories.secrets import ensure_secrets
from commonstack.testhosts import TestHost, known_hosts_line
from commonstack.stacks.paths import BACKUP_SCRIPT
from tests.integration.conftest import SSHRun
from tests.integration.stacks import cli

USER = "restic"
ROOT = "/srv/restic"


@dataclass
class SftpServer:
    host: TestHost
    ssh: SSHRun

    def run(self, command: str, timeout: float = 120) -> str:
        return run_on(self.ssh, self.host, command, timeout)

    def prepare(self) -> None:
        self.run(f"id {USER} >/dev/null 2>&1 || useradd --create-home --shell /bin/sh {USER}; "
                 f"mkdir -p {ROOT} ~{USER}/.ssh && chown {USER} {ROOT} ~{USER}/.ssh && chmod 700 ~{USER}/.ssh")  # fmt: skip

    def repository(self, group: str) -> str:
        return f"sftp:{USER}@{self.host.address}:{ROOT}/{group}"

    def admit(self, group: Group, hosts: list[str]) -> None:
        """Pin this server's key in the group's known_hosts, and let the group's hosts in with
        their own keys (derived from secrets.yaml, generated here as `deploy` would)."""
        with group.known_hosts.open("a") as handle:
            handle.write(known_hosts_line(self.host) + "\n")
        seed = ensure_secrets(group.secrets_file, group.load())[SEED_SECRET]
        for host in hosts:
            line = backup_key(seed, group.name, host).public
            self.run(f"grep -qxF {shlex.quote(line)} ~{USER}/.ssh/authorized_keys 2>/dev/null || "
                     f"echo {shlex.quote(line)} >> ~{USER}/.ssh/authorized_keys; chown {USER} ~{USER}/.ssh/authorized_keys")  # fmt: skip

    def newest_pack(self, group: str) -> tuple[int, str]:
        """(size, path) of the repository's newest pack of more than 1 MB."""
        newest = self.run(f"find {ROOT}/{group}/data -type f -size +1M -printf '%T@ %s %p\\n' | sort -rn | head -n 1")
        _, size, path = newest.split(" ", 2)
        return int(size), path.strip()

    def size(self, group: str) -> int:
        return int(self.run(f"du -sb {ROOT}/{group} | cut -f1"))


def run_on(ssh: SSHRun, host: TestHost, command: str, timeout: float = 120) -> str:
    result = ssh(host, command, timeout=timeout)
    assert result.returncode == 0, f"{command}: {result.stderr or result.stdout}"
    return result.stdout


def script(ssh: SSHRun, host: TestHost, *arguments: str, timeout: float = 900):
    """The host's backup script itself (what its timer runs), as a CompletedProcess."""
    return ssh(host, " ".join([BACKUP_SCRIPT, *map(shlex.quote, arguments)]), timeout=timeout)


def snapshot_ids(ssh: SSHRun, host: TestHost) -> list[str]:
    return [s["id"] for s in json.loads(run_on(ssh, host, f"{BACKUP_SCRIPT} snapshots", timeout=300))]


def kill_a_backup_midway(ssh: SSHRun, host: TestHost) -> None:
    """SIGKILL a backup (and its restic) while restic reads: no trap of the script can run, and
    restic's lock stays in the repository. 200 MB of random bytes keep restic busy long enough;
    they are gone before the next backup."""
    big = "/var/lib/commonstack/big-file-for-the-test"
    run_on(ssh, host, f"head -c 200000000 /dev/urandom > {big} && "
           "(nohup /usr/local/sbin/commonstack-backup run >/root/killed.log 2>&1 & echo $! > /root/backup.pid) && "
           "for i in $(seq 600); do pgrep -x restic >/dev/null && break; sleep 0.1; done; sleep 1; "
           f"kill -KILL $(cat /root/backup.pid); pkill -KILL -x restic; sleep 1; rm -f {big}", timeout=300)  # fmt: skip


def last_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def backups_command(inventories: Path, group: str, *args: str):
    return cli(inventories, "backup", group, *args, timeout=1200)
