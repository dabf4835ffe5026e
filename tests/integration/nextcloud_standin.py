"""A STAND-IN Nextcloud release for the integration tests (download.nextcloud.com is unreachable
here): a few PHP files that play occ, status.php, cron.php and WebDAV well enough for the kit's
deploy, health checks, backups and restores, packed like the real tarball and signed by a
THROWAWAY key that the tests pin in place of Nextcloud's (versions.yaml is patched in the CLI's
process only, never on disk). It is not Nextcloud.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from commonstack.deploys.nextcloud_source import file_sha256, pinned_release

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

def run_cli(inventories: Path, *args: str, release: dict | None = None, timeout=1200):
    """`commonstack ARGS...`; with `release`, Nextcloud's pin replaced by it (the stand-in's)."""
    env = dict(os.environ, COMMONSTACK_INVENTORIES=str(inventories))
    command = [sys.executable, "-m", "commonstack", *args]
    if release is not None:
        command = [sys.executable, "-c", WITH_RELEASE, json.dumps(release), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=timeout)


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
case 'maintenance:mode':
    $c = load_config(); $c['maintenance'] = isset($options['on']); save_config($c);
    echo $c['maintenance'] ? "Maintenance mode enabled\n" : "Maintenance mode disabled\n"; exit(0);
case 'maintenance:data-fingerprint':
    $c = load_config(); $c['data-fingerprint'] = md5((string)microtime()); save_config($c);
    echo "Updated data-fingerprint to {$c['data-fingerprint']}\n"; exit(0);
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



def build_stand_in(work: Path, folder: Path) -> dict:
    """The stand-in release in `folder` (nextcloud-VERSION.tar.bz2, signed by the pinned throwaway
    key), with the keys and the pin that make the CLI accept it: {archive, pinned, other, release}."""
    pinned = ThrowawayKey(work / "pinned", "commonstack test fixture: pinned <pinned@commonstack.invalid>")
    other = ThrowawayKey(work / "other", "commonstack test fixture: other <other@commonstack.invalid>")
    tree = work / "tree" / "nextcloud"
    for name, content in STAND_IN.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(content.replace("{version}", pinned_release().version))
    folder.mkdir(parents=True)
    archive = folder / pinned_release().filename
    with tarfile.open(archive, "w:bz2") as tar:
        tar.add(tree, arcname="nextcloud")
    pinned.sign(archive)
    release = {"sha256": file_sha256(archive), "gpg_fingerprint": pinned.fingerprint, "gpg_key": str(pinned.public)}
    return {"archive": archive, "pinned": pinned, "other": other, "release": release}
