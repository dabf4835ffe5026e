"""Backups of Nextcloud (the STAND-IN release of nextcloud_stand_in.py: download.nextcloud.com is not
reachable here), and its disaster recovery onto a Debian 13 host, on real test hosts.

One module, hosts shared in order:

1. An SFTP repository on a test host of its own; a Nextcloud host (bookworm, 2 GB) backing up to
   it. A file uploaded over WebDAV (through Caddy and PHP-FPM) is backed up; maintenance mode is
   on while Nextcloud is saved and off afterwards.
2. Bad cases where maintenance mode matters: the staging disk full (a 16 kB tmpfs) and a backup
   killed while Nextcloud is in maintenance: no snapshot counted as good, nothing staged left
   behind, PHP-FPM running and Nextcloud out of maintenance mode afterwards.
3. The bookworm host is destroyed; a Debian 13 (trixie) host at a new address is deployed and
   restored: PostgreSQL 15's dump into PostgreSQL 17, the file comes back byte for byte over
   WebDAV, and every check passes.
"""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest
import yaml

from commonstack import testhosts
from commonstack.inventories.groups import Group
from tests.integration.backups import SftpServer, kill_a_backup_midway, run_on, script, snapshot_ids
from tests.integration.conftest import new_host_name
from tests.integration.nextcloud_stand_in import build_apps, build_release, run_cli
from tests.integration.stacks import failed_checks, write_group

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GROUP = "ncbk"
DOMAIN = "ncbk.test"
CADDY_ROOT = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"
OCC = "runuser -u www-data -- php /var/www/nextcloud/occ"
FILE = "minutes-2026.bin"


class Site:
    def __init__(self, inventories, ssh, server: SftpServer):
        self.inventories, self.ssh, self.server = inventories, ssh, server
        self.host = None
        self.release: dict = {}
        self.apps: dict = {}
        self.app_archives: dict[str, str] = {}
        self.sha256 = ""
        self.hosts = []

    def write(self, host) -> None:
        self.host = host
        overrides = {
            "domain": DOMAIN, "admin_email": f"admin@{DOMAIN}", "matrix": {"enabled": False},
            "nextcloud": {"archive": "stand-in/nextcloud-32.0.2.tar.bz2", "app_archives": self.app_archives},
            "backup": {"enabled": True, "repository": self.server.repository(GROUP)},
        }  # fmt: skip
        group = write_group(self.inventories, GROUP, "small-group", {"server": host}, overrides, memory_mb=2048)
        self.server.admit(group, ["server"])

    def run(self, command: str, timeout: float = 300) -> str:
        return run_on(self.ssh, self.host, command, timeout)

    def cli(self, *args: str, timeout: float = 1800):
        return run_cli(self.inventories, *args, release=self.release, apps=self.apps, timeout=timeout)

    def webdav(self, method: str, local: str) -> str:
        """curl on the host, through Caddy's HTTPS site to PHP-FPM, as the Nextcloud admin."""
        password = yaml.safe_load((self.inventories / GROUP / "secrets.yaml").read_text())["nextcloud_admin_password"]
        transfer = f"-T {local}" if method == "PUT" else f"-o {local}"
        return self.run(
            f"curl -sS --fail --resolve cloud.{DOMAIN}:443:127.0.0.1 --cacert {CADDY_ROOT} -u admin:{password} "
            f"{transfer} https://cloud.{DOMAIN}/remote.php/dav/files/admin/{FILE} -w '%{{http_code}}'"
        )

    def in_maintenance(self) -> bool:
        return self.ssh(self.host, f"{OCC} status --exit-code").returncode == 1

    def deploy(self) -> None:
        result = self.cli("deploy", GROUP, "--yes", "--no-check")
        assert result.returncode == 0, f"deploy failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def site(testhosts_state, tmp_path_factory, testhost_ssh):
    if not shutil.which("gpg"):
        pytest.skip("needs gpg on this machine to sign the stand-in release (package gnupg)")
    inventories = tmp_path_factory.mktemp("backup-inventories")
    site = None
    try:
        repository_host = testhosts.up(new_host_name())
        server = SftpServer(repository_host, testhost_ssh)
        site = Site(inventories, testhost_ssh, server)
        site.hosts.append(repository_host)
        server.prepare()
        old = testhosts.up(new_host_name(), suite="bookworm", memory="2G")
        site.hosts.append(old)
        folder = Group(GROUP, inventories).folder / "stand-in"
        release = build_release(folder, tmp_path_factory.mktemp("stand-in"))
        release.pinned.sign(release.archive)
        apps = build_apps(folder)
        site.release, site.apps = release.pins, apps.pins
        site.app_archives = {app: f"stand-in/{archive.name}" for app, archive in apps.archives.items()}
        site.write(old)
        started = time.monotonic()
        site.deploy()
        print(f"Nextcloud host deployed in {time.monotonic() - started:.0f} s")
        yield site
    finally:
        for host in site.hosts if site else ():
            testhosts.down(host.name)


def test_a_file_uploaded_over_webdav_is_backed_up(site):
    site.run(f"head -c 3000000 /dev/urandom > /root/{FILE}")
    site.sha256 = site.run(f"sha256sum /root/{FILE}").split()[0]
    assert site.webdav("PUT", f"/root/{FILE}") == "201"
    result = site.cli("backup", GROUP)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nextcloud: paused while it is saved" in result.stdout and "nextcloud: resumed" in result.stdout
    assert not site.in_maintenance(), "Nextcloud stayed in maintenance mode"
    listed = site.cli("backups", GROUP)
    assert re.search(r"Nextcloud 32\.0\.2, PostgreSQL 15\.\d+, Debian bookworm amd64", listed.stdout), listed.stdout
    manifest = json.loads(site.run("/usr/local/sbin/commonstack-backup restic dump latest "
                                   "/var/backups/commonstack/manifest.json"))  # fmt: skip
    assert manifest["files"]["/var/lib/nextcloud/data"] >= 1 and manifest["versions"]["nextcloud"]["installed"]


def test_a_full_disk_leaves_nextcloud_running_and_out_of_maintenance(site):
    # A database larger than the 16 kB tmpfs (random text barely compresses).
    site.run("runuser -u postgres -- psql -q -d nextcloud -c \"CREATE TABLE oc_filler AS "
             "SELECT string_agg(md5(random()::text), '') AS text FROM generate_series(1, 2000)\"")  # fmt: skip
    before = snapshot_ids(site.ssh, site.host)
    site.run("mount -t tmpfs -o size=16k tmpfs /var/backups/commonstack")
    try:
        result = script(site.ssh, site.host, "run")
        left = site.run("ls -A /var/backups/commonstack")
    finally:
        site.run("umount /var/backups/commonstack")
        site.run("runuser -u postgres -- psql -q -d nextcloud -c 'DROP TABLE oc_filler'")
    assert result.returncode == 1
    assert "pg_dump of database nextcloud failed" in result.stderr and "No space left on device" in result.stderr
    assert "nextcloud: resumed" in result.stderr
    assert left == "" and snapshot_ids(site.ssh, site.host) == before
    assert not site.in_maintenance(), "Nextcloud stayed in maintenance mode after a failed backup"
    assert site.run("systemctl is-active php8.2-fpm").strip() == "active"


def test_a_backup_killed_in_maintenance_mode_is_cleaned_up(site):
    kill_a_backup_midway(site.ssh, site.host)
    assert site.in_maintenance(), "the killed run had Nextcloud in maintenance mode"
    recovered = script(site.ssh, site.host, "recover")
    assert recovered.returncode == 0, recovered.stderr
    assert "did not finish: cleaning up after it" in recovered.stderr and "nextcloud: resumed" in recovered.stderr
    assert not site.in_maintenance()
    again = script(site.ssh, site.host, "run")
    assert again.returncode == 0 and "saved snapshot" in again.stderr, again.stderr


def test_a_bookworm_snapshot_comes_back_on_a_new_trixie_host(site):
    testhosts.down(site.host.name)  # the machine is gone
    new = testhosts.up(new_host_name(), suite="trixie", memory="2G")
    site.hosts.append(new)
    site.write(new)
    started = time.monotonic()
    site.deploy()
    deployed = time.monotonic()
    restored = site.cli("restore", GROUP, "--yes")
    print(f"trixie host deployed in {deployed - started:.0f} s, restored in {time.monotonic() - deployed:.0f} s")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert re.search(r"server: restored snapshot [0-9a-f]{8} .*: caddy, nextcloud; \d+ checks passed", restored.stdout)
    assert site.webdav("GET", f"/root/{FILE}") == "200"
    assert site.run(f"sha256sum /root/{FILE}").split()[0] == site.sha256, "the file came back changed"
    assert site.run("runuser -u postgres -- psql -XAtc 'SHOW server_version'").startswith("17.")
    assert not site.in_maintenance()
    result = site.cli("check", GROUP, "--json", timeout=600)
    results = json.loads(result.stdout)
    assert not failed_checks(results), failed_checks(results)
