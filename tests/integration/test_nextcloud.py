"""Deploying Nextcloud for real on a Debian 12 test host with 2 GB: prerequisites, refusals, install.

One host for the module, deployed through the CLI as a volunteer would. In order:

1. The prerequisites (nextcloud.install: prerequisites): PHP-FPM and its modules, the
   pool, php.ini, the Caddy site, the cron units, on top of base/PostgreSQL/Redis/Caddy; checked
   for real (the checks that need Nextcloud skip, saying why); a second deploy changes nothing.
2. Refusals, each changing nothing: an unreachable download (the host's DNS is pointed at
   loopback, so nothing leaves the host), a local archive whose sha256 is not the published one,
   and (on the host, before extraction) an archive whose signature is not by the pinned key.
3. A STAND-IN release: a few PHP files that play occ, status.php, cron.php and WebDAV well enough
   for the deploy and the checks, signed by a THROWAWAY key that the test pins in place of
   Nextcloud's (versions.yaml is patched in the CLI's process only). It runs the whole release
   path for real — upload, sha256 + gpgv on the host, unpack, occ maintenance:install against the
   real PostgreSQL role, settings, cron, Caddy -> PHP-FPM, a 100 MB upload — then every check,
   then a deploy that changes nothing. It is not Nextcloud.
4. The real release, when a copy is available (COMMONSTACK_NEXTCLOUD_ARCHIVE=/path/to/
   nextcloud-32.0.2.tar.bz2, its .asc next to it): install, every check, zero-change re-deploy.
   download.nextcloud.com is not reachable from the development machines: skipped there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from commonstack import testhosts
from commonstack.deploys.nextcloud_source import file_sha256, pinned_release
from tests.integration.conftest import new_host_name
from tests.integration.nextcloud_standin import build_stand_in, run_cli
from tests.integration.stacks import failed_checks, write_group

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GROUP = "nc"
HOST = "server"
REAL_ARCHIVE_ENV = "COMMONSTACK_NEXTCLOUD_ARCHIVE"
LAYERS = ("--only", "base", "--only", "postgres", "--only", "redis", "--only", "caddy", "--only", "nextcloud")
OVERRIDES = {"matrix": {"enabled": False}, "nextcloud": {"default_phone_region": "DE"}}
NEEDS_INSTALL = ("status php", "occ status", "redis does the file locking", "background jobs ran", "admin webdav")
PREREQUISITES = {"install": "prerequisites"}


def host_line(result) -> str:
    """The host's last summary line: the deploy's own, after its plan's."""
    lines = [line for line in result.stdout.splitlines() if line.startswith(f"{HOST} [")]
    return lines[-1] if lines else result.stdout


def checks(inventories: Path) -> list[dict]:
    result = run_cli(inventories, "check", GROUP, "--json", timeout=600)
    assert result.returncode in (0, 1), f"check could not run:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def site(testhosts_state, tmp_path_factory):
    """The group 'nc' (Nextcloud only) on a fresh bookworm host, prerequisites deployed."""
    host = testhosts.up(new_host_name(), suite="bookworm", memory="2G")
    inventories = tmp_path_factory.mktemp("inventories")
    overrides = {**OVERRIDES, "nextcloud": {**OVERRIDES["nextcloud"], **PREREQUISITES}}
    write_group(inventories, GROUP, "small-group", {HOST: host}, overrides=overrides)
    started = time.monotonic()
    first = run_cli(inventories, "deploy", GROUP, "--yes", *LAYERS)
    assert first.returncode == 0, f"deploy failed:\n{first.stdout}\n{first.stderr}"
    yield {"host": host, "inventories": inventories, "first": first, "seconds": time.monotonic() - started}
    testhosts.down(host.name)


@pytest.fixture
def ssh(site, testhost_ssh):
    def run(command: str) -> str:
        result = testhost_ssh(site["host"], command)
        assert result.returncode == 0, f"{command}: {result.stderr}"
        return result.stdout

    return run


def profile_with(site, **nextcloud) -> None:
    overrides = {**OVERRIDES, "nextcloud": {**OVERRIDES["nextcloud"], **nextcloud}}
    write_group(site["inventories"], GROUP, "small-group", {HOST: site["host"]}, overrides=overrides)


def nothing_of_nextcloud_on(ssh) -> None:
    assert ssh("ls -A /var/www /var/lib/commonstack/nextcloud /var/lib/nextcloud/data") == (
        "/var/lib/commonstack/nextcloud:\n\n/var/lib/nextcloud/data:\n\n/var/www:\n"
    ), "a refused release left something behind"


# --- 1. prerequisites ------------------------------------------------------------------------


def test_prerequisites_deploy_and_pass_their_checks(site, ssh):
    output = site["first"].stdout
    assert re.search(rf"^{HOST} \[bookworm, 2048 MB, amd64\]: changed", output, re.M), output
    assert "Nextcloud | Install PHP-FPM and the PHP modules Nextcloud needs" in output
    assert "Nextcloud | Remove Debian's default PHP-FPM pool (www)" in output
    results = checks(site["inventories"])
    assert not failed_checks(results), failed_checks(results)
    nextcloud = {r["check"]: r for r in results if r["layer"] == "nextcloud"}
    for name in ("php fpm runs the nextcloud pool for caddy only", "php fpm loads every module nextcloud needs",
                 "php settings follow the admin manual", "www data can use the redis socket", "cron timer is active",
                 "site redirects dav discovery", "site never serves code configuration or data"):  # fmt: skip
        assert nextcloud[name]["outcome"] == "passed", nextcloud[name]
    skipped = [r for name, r in nextcloud.items() if name.startswith(NEEDS_INSTALL)]
    assert len(skipped) == 5 and all(r["outcome"] == "skipped" and "not installed" in r["message"] for r in skipped)
    assert ssh("id -nG www-data").split() == ["www-data", "redis"]


def test_prerequisites_redeploy_changes_nothing(site):
    planned = run_cli(site["inventories"], "plan", GROUP, *LAYERS)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert re.search(r": unchanged — 0 of \d+ operations would change", host_line(planned)), planned.stdout


# --- 2. refusals -----------------------------------------------------------------------------


def test_an_unreachable_download_fails_the_plan_and_changes_nothing(site, ssh):
    profile_with(site)  # the whole of Nextcloud, now
    # No resolver on the host: curl fails at once, and no packet leaves for download.nextcloud.com.
    ssh("cp /etc/resolv.conf /root/resolv.conf.saved && echo 'nameserver 127.0.0.1' > /etc/resolv.conf")
    try:
        planned = run_cli(site["inventories"], "plan", GROUP, *LAYERS)
        deployed = run_cli(site["inventories"], "deploy", GROUP, "--yes", *LAYERS)
    finally:
        ssh("mv /root/resolv.conf.saved /etc/resolv.conf")
    release = pinned_release()
    for result in (planned, deployed):
        assert result.returncode == 1
        line = host_line(result)
        assert ": failed — " in line and release.url in line and "set nextcloud.archive in stack.yaml" in line, line
        assert "Traceback" not in result.stdout + result.stderr
    assert "Nothing was deployed: no host could be planned." in deployed.stdout
    nothing_of_nextcloud_on(ssh)


def test_an_archive_with_another_checksum_is_refused_before_anything(site, ssh):
    folder = site["inventories"] / GROUP
    archive = folder / "nextcloud-32.0.2.tar.bz2"
    archive.write_bytes(b"BZh9 not really Nextcloud")
    (folder / "nextcloud-32.0.2.tar.bz2.asc").write_text("not a signature either\n")
    profile_with(site, archive=archive.name)  # relative: the group's folder
    try:
        result = run_cli(site["inventories"], "deploy", GROUP, "--yes", *LAYERS)
    finally:
        profile_with(site)
    assert result.returncode == 1
    line = host_line(result)
    expected = f"{archive} has sha256 {file_sha256(archive)[:12]}…, not the published {pinned_release().sha256[:12]}…"
    assert expected in line, line
    assert "nothing was unpacked" in line and "Nothing was deployed" in result.stdout
    nothing_of_nextcloud_on(ssh)


# --- 3. a stand-in release, signed by a throwaway key (tests/integration/nextcloud_standin.py) ---

@pytest.fixture(scope="module")
def stand_in(site, tmp_path_factory) -> dict:
    if not shutil.which("gpg"):
        pytest.skip("needs gpg on this machine to sign the stand-in release (package gnupg)")
    return build_stand_in(tmp_path_factory.mktemp("stand-in"), site["inventories"] / GROUP / "stand-in")


def test_a_release_signed_by_another_key_is_refused_on_the_host_before_extraction(site, ssh, stand_in):
    stand_in["other"].sign(stand_in["archive"])
    profile_with(site, archive="stand-in/nextcloud-32.0.2.tar.bz2")
    result = run_cli(site["inventories"], "deploy", GROUP, "--yes", *LAYERS, release=stand_in["release"])
    assert result.returncode == 1, result.stdout
    line = host_line(result)
    assert "Nextcloud 32.0.2: fetch, verify (sha256, GPG) and unpack" in line and "does not verify" in line, line
    assert ssh("ls -A /var/www /var/lib/commonstack/nextcloud") == "/var/lib/commonstack/nextcloud:\n\n/var/www:\n"


@pytest.fixture(scope="module")
def installed(site, stand_in):
    stand_in["pinned"].sign(stand_in["archive"])
    profile_with(site, archive="stand-in/nextcloud-32.0.2.tar.bz2")
    result = run_cli(site["inventories"], "deploy", GROUP, "--yes", *LAYERS, release=stand_in["release"])
    assert result.returncode == 0, f"deploy failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_the_verified_release_is_installed_and_configured(site, ssh, installed):
    assert "Nextcloud | Install Nextcloud (occ maintenance:install, PostgreSQL)" in installed.stdout
    occ = "runuser -u www-data -- php /var/www/nextcloud/occ"
    system = json.loads(ssh(f"{occ} config:list system --output=json"))["system"]
    assert system["trusted_domains"] == ["cloud.try.test"] and system["overwrite.cli.url"] == "https://cloud.try.test"
    assert system["redis"] == {"host": "/run/redis/redis-server.sock", "port": 0}
    assert system["default_phone_region"] == "DE" and system["maintenance_window_start"] == 1
    assert system["datadirectory"] == "/var/lib/nextcloud/data"
    owners = ssh("stat -c '%U %a' /var/www/nextcloud /var/www/nextcloud/occ").split()
    assert owners == ["www-data", "755", "www-data", "644"]
    assert ssh("ls -A /var/lib/commonstack/nextcloud") == "", "the archive and the install's secrets are gone"


def test_secrets_never_appear_in_output(site, installed):
    secrets = yaml.safe_load((site["inventories"] / GROUP / "secrets.yaml").read_text())
    output = installed.stdout + installed.stderr + site["first"].stdout + site["first"].stderr
    assert secrets and not [name for name, value in secrets.items() if value in output]


def test_every_check_passes_on_the_installed_release(site, installed):
    results = checks(site["inventories"])
    assert not failed_checks(results), failed_checks(results)
    nextcloud = [r for r in results if r["layer"] == "nextcloud"]
    not_passed = [r for r in nextcloud if r["outcome"] != "passed"]
    assert nextcloud and not not_passed, not_passed


def test_a_large_upload_and_pretty_urls_reach_php_through_caddy(site, testhost_ssh, installed):
    # From inside the host, through Caddy's HTTPS site and its php_fastcgi, to the pool (www-data).
    command = (
        "head -c 104857600 /dev/zero > /tmp/upload.bin && curl -sS --fail --resolve cloud.try.test:443:127.0.0.1 "
        "--cacert /var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt "
        "-F file=@/tmp/upload.bin https://cloud.try.test/apps/files/; rm -f /tmp/upload.bin"
    )
    result = testhost_ssh(site["host"], command, timeout=300)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    assert probe["uploads"] == {"file": {"size": 104857600, "error": 0}}, "a 100 MB form upload did not reach PHP whole"
    assert probe["path"].rstrip("/") == "/apps/files", "pretty URLs are not routed through index.php"
    assert (probe["user"], probe["https"], probe["front_controller_active"], probe["modHeadersAvailable"]) == (
        "www-data", "on", "true", "true"
    )
    assert probe["apcu"] and probe["opcache"] and probe["redis"], probe


def test_a_second_deploy_changes_nothing(site, installed, stand_in):
    planned = run_cli(site["inventories"], "plan", GROUP, *LAYERS, release=stand_in["release"])
    assert re.search(r": unchanged — 0 of \d+ operations would change", host_line(planned)), planned.stdout
    again = run_cli(site["inventories"], "deploy", GROUP, "--yes", *LAYERS, release=stand_in["release"])
    assert again.returncode == 0 and "Nothing to change." in again.stdout, again.stdout


# --- 4. the real release, when a copy is at hand ----------------------------------------------


def test_the_real_release_installs_and_passes_every_check(site, ssh, installed):
    path = os.environ.get(REAL_ARCHIVE_ENV)
    if not path:
        pytest.skip(
            f"no Nextcloud release here: set {REAL_ARCHIVE_ENV} to a copy of {pinned_release().filename} with its "
            ".asc next to it (download.nextcloud.com is not reachable from this machine)"
        )
    # Make room: the stand-in goes, with everything it wrote (the database keeps only its test table).
    ssh("rm -rf /var/www/nextcloud && find /var/lib/nextcloud/data -mindepth 1 -delete")
    ssh("runuser -u postgres -- psql -q -d nextcloud -c 'DROP TABLE IF EXISTS oc_standin'")
    profile_with(site, archive=str(Path(path).resolve()))
    first = run_cli(site["inventories"], "deploy", GROUP, "--yes", *LAYERS, timeout=1800)
    assert first.returncode == 0, f"deploy failed:\n{first.stdout}\n{first.stderr}"
    results = checks(site["inventories"])
    assert not failed_checks(results), failed_checks(results)
    assert all(r["outcome"] == "passed" for r in results if r["layer"] == "nextcloud")
    again = run_cli(site["inventories"], "deploy", GROUP, "--yes", *LAYERS)
    assert "Nothing to change." in again.stdout, again.stdout
