"""The Nextcloud STAND-IN release of the integration tests, shared by test_nextcloud.py and
test_upgrade_nextcloud.py: download.nextcloud.com is unreachable where they run.

It is NOT Nextcloud: a few PHP files that play occ (install, settings, status with its exit
codes, maintenance mode, upgrade with a database migration of its own, the missing indices),
status.php, cron.php and WebDAV well enough for the kit's deploy, upgrades and health checks.
Each release is a real tarball, signed by a THROWAWAY key made for the test run, that the tests
pin in place of Nextcloud's in the CLI's own process only (versions.yaml is never changed on
disk): the whole release path runs for real, sha256 and gpgv on the host included. A release
built `broken` is a TEST-ONLY BROKEN RELEASE: its status.php answers 500, so its health gate fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from commonstack.deploys.nextcloud_source import file_sha256

# Runs the CLI with versions.yaml's Nextcloud pins updated (its own process only, never on disk):
# the CLI imports the rest of the kit lazily, so every module it loads binds the patched versions().
WITH_RELEASES = (
    "import json, sys\n"
    "from commonstack.stacks import versions as pins\n"
    "pinned = pins.versions()\n"
    "nextcloud = pins.NextcloudPins.model_validate({**pinned.nextcloud.model_dump(), **json.loads(sys.argv[1])})\n"
    "patched = pinned.model_copy(update={'nextcloud': nextcloud})\n"
    "pins.versions = lambda: patched\n"
    "from commonstack.cli import main\n"
    "main(sys.argv[2:], prog_name='commonstack')\n"
)


def run_cli(inventories: Path, *args: str, pins: dict | None = None, timeout=1200) -> subprocess.CompletedProcess:
    """`commonstack ARGS...`; with `pins`, versions.yaml's Nextcloud entry updated by them."""
    env = dict(os.environ, COMMONSTACK_INVENTORIES=str(inventories))
    command = [sys.executable, "-m", "commonstack", *args]
    if pins is not None:
        command = [sys.executable, "-c", WITH_RELEASES, json.dumps(pins), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=timeout)


STAND_IN = {
    "version.php": "<?php\n$OC_Version = array({numbers});\n$OC_VersionString = '{version}';\n",
    "lib/standin.php": r"""<?php
// commonstack TEST STAND-IN, not Nextcloud: just enough of occ, status.php, cron.php and WebDAV for
// the kit's deploy, upgrades and health checks (tests/integration/nextcloud_standin.py).
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
    $installed = (bool)($c['installed'] ?? false);
    return ['installed' => $installed, 'version' => implode('.', $OC_Version),
            'versionstring' => $OC_VersionString, 'edition' => '', 'maintenance' => (bool)($c['maintenance'] ?? false),
            'needsDbUpgrade' => $installed && ($c['version'] ?? '') !== implode('.', $OC_Version),
            'productname' => 'commonstack stand-in', 'extendedSupport' => false];
}
function database() {
    $c = load_config();
    $db = @pg_connect(sprintf("host=%s dbname=%s user=%s password='%s'", $c['dbhost'], $c['dbname'], $c['dbuser'], $c['dbpassword']));
    if (!$db) { fwrite(STDERR, "cannot connect to the PostgreSQL database\n"); exit(1); }
    return $db;
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
    // As Nextcloud's occ status --exit-code: 0 normal, 1 maintenance mode, 2 an upgrade is needed.
    if (isset($options['exit-code'])) { exit(status()['maintenance'] ? 1 : (status()['needsDbUpgrade'] ? 2 : 0)); }
    echo json_encode(status()), "\n"; exit(0);
case 'upgrade':
    // As Nextcloud: no downgrade; the database migrates (here: a row per release), config.php says the new version.
    $c = load_config(); $code = status()['version'];
    if (version_compare($c['version'] ?? '0', $code, '>')) { fail("Downgrading from {$c['version']} to $code is not supported"); }
    if (($c['version'] ?? '') === $code) { echo "No upgrade required.\n"; exit(0); }
    $db = database();
    if (!pg_query($db, 'CREATE TABLE IF NOT EXISTS oc_standin_migrations (version text)')
        || !pg_query_params($db, 'INSERT INTO oc_standin_migrations VALUES ($1)', [$code])) { fail('the migration failed'); }
    $c['version'] = $code; save_config($c);
    echo "Update successful\n"; exit(0);
case 'maintenance:mode':
    $c = load_config(); $c['maintenance'] = isset($options['on']); save_config($c);
    echo 'Maintenance mode ' . (isset($options['on']) ? 'enabled' : 'disabled') . "\n"; exit(0);
case 'db:add-missing-indices': case 'db:add-missing-columns': case 'db:add-missing-primary-keys':
    echo "Done.\n"; exit(0);
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
// The stand-in of a BROKEN release (test-only) answers 500 here: its health gate fails.
if (is_file(__DIR__ . '/lib/broken')) { http_response_code(500); exit; }
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


def build_release(folder: Path, version: str, broken: bool = False) -> Path:
    """folder/nextcloud-VERSION.tar.bz2: the stand-in at `version` (unsigned: see ThrowawayKey.sign)."""
    tree = folder / f".tree-{version}" / "nextcloud"
    numbers = ", ".join(version.split(".") + ["0"])
    for name, content in STAND_IN.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(content.replace("{version}", version).replace("{numbers}", numbers))
    if broken:
        (tree / "lib" / "broken").write_text("TEST-ONLY BROKEN RELEASE: status.php answers 500\n")
    archive = folder / f"nextcloud-{version}.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tar:
        tar.add(tree, arcname="nextcloud")
    return archive


def pins_for(key: ThrowawayKey, archives: list[Path], current: str) -> dict:
    """The update of versions.yaml's Nextcloud entry that makes these stand-in releases the known
    ones, signed by `key`."""
    releases = {
        archive.name.removeprefix("nextcloud-").removesuffix(".tar.bz2"): {
            "sha256": file_sha256(archive), "php_min": "8.1", "php_max": "8.4",
        }
        for archive in archives
    }  # fmt: skip
    return {"gpg_fingerprint": key.fingerprint, "gpg_key": str(key.public), "releases": releases, "current": current}
