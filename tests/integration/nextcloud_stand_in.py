"""A STAND-IN Nextcloud release for integration tests: not Nextcloud, and signed by a THROWAWAY key.

download.nextcloud.com is not reachable from the development machines, so the tests that need an
installed Nextcloud (tests/integration/test_nextcloud.py; backups and upgrades may reuse it) deploy
this instead: a few PHP files that play occ, status.php, cron.php and WebDAV well enough for the
kit's deploy, upgrades and health checks (apps, setup checks, CalDAV and CardDAV, `occ upgrade`
with a migration of the real database, maintenance mode and `status --exit-code` included), packed like the
real tarball (nextcloud/ at the top) and signed by a key made for the test run; and STAND-IN app
archives (calendar, contacts: an info.xml and a README each) with an app store that is a folder on
the test host (STAND_IN_STORE). The kit's pins are patched in the CLI's own process only
(``run_cli(..., release=..., apps=...)``): versions.yaml on disk is never changed, and the app store
the kit probes is always the stand-in's.

Use (a profile with ``nextcloud.archive`` and ``nextcloud.app_archives`` pointing at these)::

    release = build_release(group_folder / "stand-in", work_folder)   # a StandInRelease
    apps = build_apps(group_folder / "stand-in")                       # a StandInApps
    run_cli(inventories, "deploy", GROUP, "--yes", release=release.pins, apps=apps.pins)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from commonstack.deploys.nextcloud_source import file_sha256, pinned_release
from commonstack.stacks.versions import versions

# The stand-in's app store: a folder on the test host, and what the kit probes before
# `occ app:install` (a file URL: no packet leaves the host; missing until a test fills it).
STAND_IN_STORE = "/var/lib/commonstack-stand-in/app-store"
STAND_IN_STORE_URL = f"file://{STAND_IN_STORE}/apps.json"

# Patches the pinned releases in the CLI's own process (never on disk), then runs the CLI.
# (The CLI imports the rest of the kit lazily: every module it loads binds the patched versions().)
WITH_RELEASE = (
    "import json, sys\n"
    "from commonstack.stacks import versions as pins\n"
    "pinned = pins.versions()\n"
    "release, apps = json.loads(sys.argv[1]), json.loads(sys.argv[2])\n"
    "patched = pinned.model_copy(update={\n"
    "    'nextcloud': pins.NextcloudPins.model_validate({**pinned.nextcloud.model_dump(), **release}),\n"
    "    'nextcloud_apps': pins.NextcloudAppsPins.model_validate({**pinned.nextcloud_apps.model_dump(), **apps}),\n"
    "})\n"
    "pins.versions = lambda: patched\n"
    "from commonstack.cli import main\n"
    "main(sys.argv[3:], prog_name='commonstack')\n"
)


def run_cli(inventories: Path, *args: str, release: dict | None = None, apps: dict | None = None, timeout=1200,
            wait: bool = True):
    """`commonstack ARGS`; with `release` (the stand-in's ``nextcloud`` pins) the pins are patched:
    ``nextcloud_apps`` by `apps` (StandInApps.pins), and its store is always the stand-in's, so that
    a test never reaches Nextcloud's real app store. `wait=False`: the started process."""
    env = dict(os.environ, COMMONSTACK_INVENTORIES=str(inventories))
    command = [sys.executable, "-m", "commonstack", *args]
    if release is not None:
        apps = {"store": STAND_IN_STORE_URL, **(apps or {})}
        command = [sys.executable, "-c", WITH_RELEASE, json.dumps(release), json.dumps(apps), *args]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                stdin=subprocess.DEVNULL)  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=timeout)


STAND_IN = {
    "version.php": "<?php\n$OC_Version = array({numbers});\n$OC_VersionString = '{version}';\n",
    # The real tarball ships its own apps in apps/, where the app store puts the others too.
    "apps/README.md": "commonstack TEST STAND-IN: Nextcloud's shipped apps would be here.\n",
    "lib/standin.php": r"""<?php
// commonstack TEST STAND-IN, not Nextcloud: just enough of occ (apps and setup checks too), status.php,
// cron.php, WebDAV, CalDAV and CardDAV for the kit's deploy and health checks (tests/integration/test_nextcloud.py).
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
const STORE = '%STORE%';  // the stand-in app store: APP.tar.gz files, and apps.json once it "answers"
function major(): int { include CODE . '/version.php'; return $OC_Version[0]; }
function enabled_apps(): array { return app_config()['enabled_apps'] ?? []; }
function app_info(string $id): ?array {  // id, version and the majors of apps/ID/appinfo/info.xml
    $file = CODE . "/apps/$id/appinfo/info.xml";
    if (!is_file($file)) { return null; }
    $xml = file_get_contents($file);
    $tag = fn($re) => preg_match($re, $xml, $m) ? $m[1] : '';
    return ['id' => $tag('#<id>([^<]*)</id>#'), 'version' => $tag('#<version>([^<]*)</version>#'),
            'min' => $tag('#<nextcloud[^>]*min-version="(\d+)#'), 'max' => $tag('#<nextcloud[^>]*max-version="(\d+)#')];
}
function enable_app(string $id): string {
    $info = app_info($id);
    if ($info === null) { fail("Could not download app $id: the stand-in has no app store for app:enable"); }
    if (($info['min'] !== '' && (int)$info['min'] > major()) || ($info['max'] !== '' && (int)$info['max'] < major())) {
        fail("App \"$id\" cannot be installed because it is not compatible with this version of the server.");
    }
    $a = app_config(); $a['enabled_apps'] = array_values(array_unique([...enabled_apps(), $id])); save_app_config($a);
    return "$id {$info['version']} enabled";
}
function fail(string $message): never { fwrite(STDERR, "$message\n"); exit(1); }
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
    $db = @pg_connect(sprintf("host=%s dbname=%s user=%s password='%s'", $c['dbhost'] ?? '', $c['dbname'] ?? '',
        $c['dbuser'] ?? '', $c['dbpassword'] ?? ''));
    if (!$db) { fail('cannot connect to the PostgreSQL database: ' . (error_get_last()['message'] ?? 'no reason given')); }
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
switch ($command) {
case 'status':
    // As Nextcloud's `occ status --exit-code`: 0 normal, 1 maintenance mode, 2 an upgrade is needed.
    if (isset($options['exit-code'])) { exit(status()['maintenance'] ? 1 : (status()['needsDbUpgrade'] ? 2 : 0)); }
    echo json_encode(status()), "\n"; exit(0);
case 'upgrade':
    // As Nextcloud: no downgrade; the database migrates (here: a row per release); apps that do not
    // suit the new major are disabled; config.php then says the new version.
    $c = load_config(); $code = status()['version'];
    if (version_compare($c['version'] ?? '0', $code, '>')) { fail("Downgrading from {$c['version']} to $code is not supported"); }
    if (($c['version'] ?? '') === $code) { echo "No upgrade required.\n"; exit(0); }
    $db = database();
    if (!pg_query($db, 'CREATE TABLE IF NOT EXISTS oc_standin_migrations (version text)')
        || !pg_query_params($db, 'INSERT INTO oc_standin_migrations VALUES ($1)', [$code])) { fail('the migration failed'); }
    $a = app_config(); $kept = [];
    foreach (enabled_apps() as $id) {
        $info = app_info($id);
        if ($info !== null && ($info['max'] === '' || (int)$info['max'] >= major())) { $kept[] = $id; }
        else { echo "Disabled incompatible app: $id\n"; }
    }
    $a['enabled_apps'] = $kept; save_app_config($a);
    $c['version'] = $code; save_config($c);
    echo "Update successful\n"; exit(0);
case 'maintenance:mode':
    $c = load_config(); $c['maintenance'] = isset($options['on']); save_config($c);
    echo 'Maintenance mode ' . (isset($options['on']) ? 'enabled' : 'disabled') . "\n"; exit(0);
case 'db:add-missing-indices': case 'db:add-missing-columns': case 'db:add-missing-primary-keys':
    echo "Done.\n"; exit(0);
case 'maintenance:data-fingerprint':
    $c = load_config(); $c['data-fingerprint'] = md5((string)microtime()); save_config($c);
    echo "Updated data-fingerprint to {$c['data-fingerprint']}\n"; exit(0);
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
case 'app:list':  // shipped apps, and those in apps/ (enabled or not)
    $enabled = ['dav' => '1.34.0', 'files' => '2.4.0']; $disabled = [];
    foreach (glob(CODE . '/apps/*/appinfo/info.xml') as $file) {
        $info = app_info(basename(dirname($file, 2)));
        if (in_array($info['id'], enabled_apps(), true)) { $enabled[$info['id']] = $info['version']; }
        else { $disabled[$info['id']] = $info['version']; }
    }
    echo json_encode(['enabled' => (object)$enabled, 'disabled' => (object)$disabled]), "\n"; exit(0);
case 'app:enable':
    echo enable_app($positional[0]), "\n"; exit(0);
case 'app:install':  // from the stand-in store: STORE/APP.tar.gz, once STORE/apps.json exists
    $id = $positional[0];
    if (app_info($id) !== null) { fail("$id already installed"); }
    if (!is_file(STORE . '/apps.json') || !is_file(STORE . "/$id.tar.gz")) { fail("Could not download app $id, it was not found on the appstore"); }
    exec('tar -xzf ' . escapeshellarg(STORE . "/$id.tar.gz") . ' -C ' . escapeshellarg(CODE . '/apps') . ' 2>&1', $out, $rc);
    if ($rc !== 0 || app_info($id) === null) { fail("Could not extract app $id: " . implode(' ', $out)); }
    echo "$id " . app_info($id)['version'] . " installed\n", enable_app($id), "\n"; exit(0);
case 'setupchecks':  // a few of the admin overview's checks, in occ's JSON
    $check = fn($name, $severity, $description = null, $parameters = null) => ['name' => $name, 'severity' => $severity,
        'description' => $description, 'descriptionParameters' => $parameters, 'linkToDoc' => null];
    $c = load_config(); $ago = time() - (int)(app_config()['lastcron'] ?? 0);
    $results = [
        'system' => [
            'OCA\\Settings\\SetupChecks\\CronInfo' => $ago > 3600
                ? $check('Cron last run', 'error', 'Last background job execution ran {relativeTime}. Something seems wrong.',
                         ['relativeTime' => ['type' => 'highlight', 'id' => 'relative-time', 'name' => intdiv($ago, 60) . ' minutes ago']])
                : $check('Cron last run', 'success'),
            'OCA\\Settings\\SetupChecks\\MemcacheConfigured' => ($c['memcache.local'] ?? '') !== ''
                ? $check('Memcache', 'success') : $check('Memcache', 'info', 'No memory cache has been configured.'),
        ],
        'network' => ['OCA\\Settings\\SetupChecks\\InternetConnectivity' =>
            $check('Internet connectivity', 'warning', 'The stand-in never checks the internet.')],
    ];
    echo json_encode($results), "\n";
    foreach ($results as $checks) { foreach ($checks as $r) { if ($r['severity'] !== 'success') { exit(1); } } }
    exit(0);
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
// A TEST-ONLY BROKEN RELEASE (build_release(..., broken=True)) answers 500 here: its health gate fails.
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
$path = $_SERVER['PATH_INFO'] ?? '';
// CalDAV and CardDAV: the user's calendar home and address book home, as a PROPFIND lists them.
$homes = ["/dav/calendars/$user/" => ['personal', '<cal:calendar xmlns:cal="urn:ietf:params:xml:ns:caldav"/>'],
          "/dav/addressbooks/users/$user/" => ['contacts', '<card:addressbook xmlns:card="urn:ietf:params:xml:ns:carddav"/>']];
foreach ($homes as $home => [$child, $type]) {
    if (rtrim($path, '/') !== rtrim($home, '/')) { continue; }
    if ($_SERVER['REQUEST_METHOD'] !== 'PROPFIND') { http_response_code(405); exit; }
    http_response_code(207); header('Content-Type: application/xml; charset=utf-8');
    $response = fn($href, $kind) => "<d:response><d:href>$href</d:href><d:propstat><d:prop><d:resourcetype><d:collection/>$kind"
        . "</d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>";
    echo '<?xml version="1.0"?><d:multistatus xmlns:d="DAV:">', $response("/remote.php$home", ''),
        (($_SERVER['HTTP_DEPTH'] ?? '1') === '0' ? '' : $response("/remote.php$home$child/", $type)), '</d:multistatus>';
    exit;
}
$prefix = "/dav/files/$user/";
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


@dataclass(frozen=True)
class StandInRelease:
    """The stand-in archive (its .asc not yet written), its two throwaway keys, and the pins that
    make the kit accept it (``nextcloud`` in versions.yaml: the release, current, and the pinned key)."""

    archive: Path
    pinned: ThrowawayKey  # the key the patched pins trust
    other: ThrowawayKey  # a key they do not
    pins: dict


def build_release(
    folder: Path,
    work: Path,
    version: str | None = None,
    broken: bool = False,
    keys: tuple[ThrowawayKey, ThrowawayKey] | None = None,
) -> StandInRelease:
    """The stand-in as nextcloud-VERSION.tar.bz2 in `folder` (VERSION: the pinned one's, unless
    given); keys (new ones unless given) and the unpacked tree in `work`. A `broken` release is a
    TEST-ONLY BROKEN RELEASE: its status.php answers 500, so an upgrade's health gate fails."""
    version = version or pinned_release().version
    pinned, other = keys or (
        ThrowawayKey(work / "pinned", "commonstack test fixture: pinned <pinned@commonstack.invalid>"),
        ThrowawayKey(work / "other", "commonstack test fixture: other <other@commonstack.invalid>"),
    )
    tree = work / f"tree-{version}" / "nextcloud"
    numbers = ", ".join([*version.split("."), "0"])
    for name, content in STAND_IN.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        text = content.replace("{version}", version).replace("{numbers}", numbers).replace("%STORE%", STAND_IN_STORE)
        (tree / name).write_text(text)
    if broken:
        (tree / "lib" / "broken").write_text("TEST-ONLY BROKEN RELEASE: status.php answers 500\n")
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / f"nextcloud-{version}.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tar:
        tar.add(tree, arcname="nextcloud")
    release = {"sha256": file_sha256(archive), "php_min": "8.1", "php_max": "8.4"}
    pins = {"current": version, "releases": {version: release}, "gpg_fingerprint": pinned.fingerprint,
            "gpg_key": str(pinned.public)}  # fmt: skip
    return StandInRelease(archive=archive, pinned=pinned, other=other, pins=pins)


def known_releases(releases: list[StandInRelease], current: str) -> dict:
    """The ``nextcloud`` pins that make all these stand-in releases (one key's) the known ones."""
    return {**releases[0].pins, "current": current,
            "releases": {v: r for release in releases for v, r in release.pins["releases"].items()}}  # fmt: skip


# --- stand-in apps ------------------------------------------------------------------------------


def app_archive(path: Path, app: str, version: str, majors: tuple[int, int]) -> Path:
    """A STAND-IN app, packed as the app store packs apps (APP/ at the top): its appinfo/info.xml
    (id, version, the Nextcloud majors it declares) and a README saying what it is."""
    files = {
        f"{app}/appinfo/info.xml": (
            f'<?xml version="1.0"?>\n<info><id>{app}</id><name>commonstack TEST STAND-IN of {app}</name>'
            f"<version>{version}</version><dependencies><nextcloud min-version=\"{majors[0]}\" "
            f'max-version="{majors[1]}"/></dependencies></info>\n'
        ),
        f"{app}/README.md": f"commonstack TEST STAND-IN, not Nextcloud's {app} app (tests/integration/test_nextcloud.py)\n",
    }
    with tempfile.TemporaryDirectory() as work:
        tree = Path(work)
        for name, content in files.items():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            (tree / name).write_text(content)
        with tarfile.open(path, "w:gz") as tar:
            tar.add(tree / app, arcname=app)
    return path


@dataclass(frozen=True)
class StandInApps:
    """Stand-in archives of the apps versions.yaml pins (calendar, contacts), named like the real
    ones, and the ``nextcloud_apps`` pins that make the kit accept them (for run_cli's `apps`)."""

    archives: dict[str, Path]
    pins: dict


def build_apps(folder: Path, majors: tuple[int, int] | None = None) -> StandInApps:
    """A stand-in archive in `folder` for every app versions.yaml pins, for `majors` (default: the
    pinned Nextcloud's major only)."""
    folder.mkdir(parents=True, exist_ok=True)
    low, high = majors or (pinned_release().major, pinned_release().major)
    archives, releases = {}, {}
    for app, pin in versions().nextcloud_apps.releases.items():
        archive = app_archive(folder / pin.filename, app, pin.version, (low, high))
        archives[app] = archive
        releases[app] = {"version": pin.version, "url": f"https://app-store.stand-in.invalid/{pin.filename}",
                         "sha256": file_sha256(archive), "min_major": low, "max_major": high}  # fmt: skip
    return StandInApps(archives=archives, pins={"store": STAND_IN_STORE_URL, "releases": releases})
