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
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from commonstack import testhosts
from commonstack.deploys.nextcloud_source import file_sha256, pinned_release
from tests.integration.conftest import new_host_name
from tests.integration.stacks import failed_checks, write_group

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GROUP = "nc"
HOST = "server"
REAL_ARCHIVE_ENV = "COMMONSTACK_NEXTCLOUD_ARCHIVE"
LAYERS = ("--only", "base", "--only", "postgres", "--only", "redis", "--only", "caddy", "--only", "nextcloud")
OVERRIDES = {"matrix": {"enabled": False}, "nextcloud": {"default_phone_region": "DE"}}
NEEDS_INSTALL = ("status php", "occ status", "redis does the file locking", "background jobs ran", "admin webdav")
# Patches the pinned release in the CLI's own process (never on disk), then runs the CLI.
# (The CLI imports the rest of the kit lazily: every module it loads binds the patched versions().)
WITH_RELEASE = (
    "import json, sys\n"
    "from commonstack.stacks import versions as pins\n"
    "pinned = pins.versions()\n"
    "patched = pinned.model_copy(update={'nextcloud': pinned.nextcloud.model_copy(update=json.loads(sys.argv[1]))})\n"
    "pins.versions = lambda: patched\n"
    "from commonstack.cli import main\n"
    "main(sys.argv[2:], prog_name='commonstack')\n"
)
PREREQUISITES = {"install": "prerequisites"}


def run_cli(inventories: Path, *args: str, release: dict | None = None, timeout=1200):
    env = dict(os.environ, COMMONSTACK_INVENTORIES=str(inventories))
    command = [sys.executable, "-m", "commonstack", *args]
    if release is not None:
        command = [sys.executable, "-c", WITH_RELEASE, json.dumps(release), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=timeout)


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
    assert "Nothing was deployed: no host could be reached or planned." in deployed.stdout
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


# --- 3. a stand-in release, signed by a throwaway key ----------------------------------------

STAND_IN = {
    "version.php": "<?php\n$OC_Version = array(32, 0, 2, 2);\n$OC_VersionString = '{version}';\n",
    "lib/standin.php": r"""<?php
// commonstack TEST STAND-IN, not Nextcloud: just enough of occ, status.php, cron.php and WebDAV for
// the kit's deploy and health checks (tests/integration/test_nextcloud.py).
const CODE = __DIR__ . '/..';
function config_file(): string { return CODE . '/config/config.php'; }
function load_config(): array { $CONFIG = []; if (is_file(config_file())) { include config_file(); } return $CONFIG; }
function save_config(array $c): void {
    @mkdir(CODE . '/config', 0750);
    file_put_contents(config_file(), "<?php\n\$CONFIG = " . var_export($c, true) . ";\n");
}
function data_dir(): string { return load_config()['datadirectory'] ?? '/nonexistent'; }
function app_config(): array { $f = data_dir() . '/appconfig.json'; return is_file($f) ? json_decode(file_get_contents($f), true) : []; }
function save_app_config(array $a): void { file_put_contents(data_dir() . '/appconfig.json', json_encode($a)); }
function status(): array {
    include CODE . '/version.php';
    $c = load_config();
    return ['installed' => (bool)($c['installed'] ?? false), 'version' => implode('.', $OC_Version),
            'versionstring' => $OC_VersionString, 'edition' => '', 'maintenance' => (bool)($c['maintenance'] ?? false),
            'needsDbUpgrade' => false, 'productname' => 'commonstack stand-in', 'extendedSupport' => false];
}
""",
    "occ": r"""<?php
require __DIR__ . '/lib/standin.php';
$args = array_slice($argv, 1);
$command = array_shift($args);
$options = []; $positional = [];
foreach ($args as $a) {
    if (str_starts_with($a, '--')) { $kv = explode('=', substr($a, 2), 2); $options[$kv[0]] = $kv[1] ?? true; }
    elseif ($a === '-e') { $options['exit-code'] = true; }
    else { $positional[] = $a; }
}
function fail(string $message): never { fwrite(STDERR, "$message\n"); exit(1); }
switch ($command) {
case 'status':
    if (isset($options['exit-code'])) { exit(status()['maintenance'] ? 1 : 0); }
    echo json_encode(status()), "\n"; exit(0);
case 'maintenance:install':
    if (status()['installed']) { fail('Command "maintenance:install" is not defined.'); }
    $db = @pg_connect(sprintf("host=%s dbname=%s user=%s password='%s'", $options['database-host'],
        $options['database-name'], $options['database-user'], $options['database-pass']));
    if (!$db || !pg_query($db, 'CREATE TABLE IF NOT EXISTS oc_standin (id int)')) { fail('cannot use the PostgreSQL database'); }
    $data = $options['data-dir'];
    if (!is_dir($data) || !is_writable($data)) { fail("Cannot write into \"$data\""); }
    touch("$data/.ocdata");
    save_config(['instanceid' => 'standin', 'passwordsalt' => 'x', 'secret' => 'x', 'trusted_domains' => ['localhost'],
        'datadirectory' => $data, 'dbtype' => $options['database'], 'version' => status()['version'],
        'overwrite.cli.url' => 'http://localhost', 'dbname' => $options['database-name'], 'dbhost' => $options['database-host'],
        'dbuser' => $options['database-user'], 'dbpassword' => $options['database-pass'], 'installed' => true]);
    file_put_contents("$data/admin.user", $options['admin-user']);
    file_put_contents("$data/admin.password", password_hash($options['admin-pass'], PASSWORD_DEFAULT));
    echo "Nextcloud was successfully installed\n"; exit(0);
case 'user:resetpassword':
    $password = getenv('OC_PASS');
    if (!isset($options['password-from-env']) || !$password) { fail('--password-from-env given, but OC_PASS is empty!'); }
    file_put_contents(data_dir() . '/admin.password', password_hash($password, PASSWORD_DEFAULT));
    echo "Successfully reset password for {$positional[0]}\n"; exit(0);
case 'config:list':
    $c = load_config();
    foreach (['dbpassword', 'passwordsalt', 'secret'] as $k) { if (isset($c[$k])) { $c[$k] = '***REMOVED SENSITIVE VALUE***'; } }
    echo json_encode(['system' => $c]), "\n"; exit(0);
case 'config:system:get':
    $v = load_config();
    foreach ($positional as $k) { if (!is_array($v) || !array_key_exists($k, $v)) { exit(1); } $v = $v[$k]; }
    echo is_array($v) ? json_encode($v) : (is_bool($v) ? ($v ? 'true' : 'false') : $v), "\n"; exit(0);
case 'config:system:set':
    $value = $options['value'] ?? '';
    $type = $options['type'] ?? 'string';
    $value = $type === 'integer' ? (int)$value : ($type === 'boolean' ? $value === 'true' : $value);
    $c = load_config(); $ref = &$c; $last = count($positional) - 1;
    foreach ($positional as $i => $k) { if ($i < $last && !is_array($ref[$k] ?? null)) { $ref[$k] = []; } $ref = &$ref[$k]; }
    $ref = $value; unset($ref); save_config($c);
    echo 'System config value ' . implode(' => ', $positional) . ' set to ' . json_encode($value) . "\n"; exit(0);
case 'config:system:delete':
    $c = load_config(); unset($c[$positional[0]]); save_config($c);
    echo "System config value {$positional[0]} deleted\n"; exit(0);
case 'config:app:get':
    $a = app_config();
    if (!array_key_exists($positional[1], $a)) { exit(1); }
    echo $a[$positional[1]], "\n"; exit(0);
case 'background:cron':
    $a = app_config(); $a['backgroundjobs_mode'] = 'cron'; save_app_config($a);
    echo "Set mode for background jobs to 'cron'\n"; exit(0);
default:
    fail("Command \"$command\" is not defined.");
}
""",
    "cron.php": r"""<?php
require __DIR__ . '/lib/standin.php';
if (php_sapi_name() !== 'cli' || !status()['installed']) { exit(0); }
$a = app_config(); $a['lastcron'] = time(); save_app_config($a);
""",
    "status.php": r"""<?php
require __DIR__ . '/lib/standin.php';
header('Content-Type: application/json');
echo json_encode(status());
""",
    "remote.php": r"""<?php
require __DIR__ . '/lib/standin.php';
$auth = $_SERVER['HTTP_AUTHORIZATION'] ?? '';
[$user, $password] = array_pad(explode(':', (string)base64_decode(substr($auth, 6)), 2), 2, '');
$data = data_dir();
if (!str_starts_with($auth, 'Basic ') || $user !== @file_get_contents("$data/admin.user")
    || !password_verify($password, (string)@file_get_contents("$data/admin.password"))) {
    http_response_code(401); header('WWW-Authenticate: Basic realm="Nextcloud"'); exit;
}
$prefix = "/dav/files/$user/";
$path = $_SERVER['PATH_INFO'] ?? '';
if (!str_starts_with($path, $prefix)) { http_response_code(404); exit; }
@mkdir("$data/$user/files", 0750, true);
$file = "$data/$user/files/" . basename($path);
switch ($_SERVER['REQUEST_METHOD']) {
case 'PUT': $existed = is_file($file); file_put_contents($file, fopen('php://input', 'r')); http_response_code($existed ? 204 : 201); break;
case 'GET': if (!is_file($file)) { http_response_code(404); break; } readfile($file); break;
case 'DELETE': @unlink($file); http_response_code(204); break;
default: http_response_code(405);
}
""",
    "index.php": r"""<?php
require __DIR__ . '/lib/standin.php';
header('Content-Type: application/json');
$redis = false;
try { $r = new Redis(); $redis = $r->connect('/run/redis/redis-server.sock') && $r->ping(); } catch (Throwable $e) {}
echo json_encode([
    'path' => $_SERVER['PATH_INFO'] ?? '', 'https' => $_SERVER['HTTPS'] ?? '',
    'front_controller_active' => getenv('front_controller_active'), 'modHeadersAvailable' => getenv('modHeadersAvailable'),
    'user' => posix_getpwuid(posix_geteuid())['name'], 'apcu' => function_exists('apcu_enabled') && apcu_enabled(),
    'redis' => (bool)$redis, 'opcache' => (bool)(opcache_get_status(false)['opcache_enabled'] ?? false),
    'uploads' => array_map(fn($f) => ['size' => $f['size'], 'error' => $f['error']], $_FILES),
]);
""",
}


class ThrowawayKey:
    """A signing key made for this test run only, in its own GnuPG home: never Nextcloud's."""

    def __init__(self, home: Path, uid: str):
        home.mkdir(mode=0o700)
        self.home = home
        self.gpg("--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
        listing = self.gpg("--with-colons", "--list-keys").splitlines()
        self.fingerprint = next(line.split(":")[9] for line in listing if line.startswith("fpr:"))
        self.public = home / "public.asc"
        self.public.write_text(self.gpg("--armor", "--export", self.fingerprint))

    def gpg(self, *args: str) -> str:
        done = subprocess.run(["gpg", "--homedir", str(self.home), "--batch", *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def sign(self, archive: Path) -> None:
        self.gpg("--yes", "--armor", "--detach-sign", "--output", f"{archive}.asc", str(archive))


@pytest.fixture(scope="module")
def stand_in(site, tmp_path_factory) -> dict:
    if not shutil.which("gpg"):
        pytest.skip("needs gpg on this machine to sign the stand-in release (package gnupg)")
    work = tmp_path_factory.mktemp("stand-in")
    pinned = ThrowawayKey(work / "pinned", "commonstack test fixture: pinned <pinned@commonstack.invalid>")
    other = ThrowawayKey(work / "other", "commonstack test fixture: other <other@commonstack.invalid>")
    tree = work / "tree" / "nextcloud"
    for name, content in STAND_IN.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(content.replace("{version}", pinned_release().version))
    folder = site["inventories"] / GROUP / "stand-in"
    folder.mkdir()
    archive = folder / "nextcloud-32.0.2.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tar:
        tar.add(tree, arcname="nextcloud")
    release = {"sha256": file_sha256(archive), "gpg_fingerprint": pinned.fingerprint, "gpg_key": str(pinned.public)}
    return {"archive": archive, "pinned": pinned, "other": other, "release": release}


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
