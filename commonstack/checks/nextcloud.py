"""Health checks of Nextcloud: PHP-FPM and its pool, the Caddy site seen from outside, and once
Nextcloud is installed, status.php, occ, Redis locking, cron, a WebDAV round trip by its admin, the
group's apps (calendar, contacts) enabled, CalDAV and CardDAV answering for the admin, and
Nextcloud's own setup checks (`occ setupchecks`: what its admin overview shows) without an error.

The checks that need an installed Nextcloud skip, saying why, on a host where only the
prerequisites were deployed (no release archive was available).
"""

from __future__ import annotations

import json
import re
import secrets
import ssl
import time
import xml.etree.ElementTree as ElementTree
from base64 import b64encode
from urllib.parse import unquote

import pytest

from commonstack.checks import ahead
from commonstack.checks.expect import assert_jails_active, assert_sandboxed, require_layer, require_release
from commonstack.checks.host_state import file_states, unit_state
from commonstack.checks.probes import https_request
from commonstack.stacks.paths import NEXTCLOUD_CODE as CODE_DIR
from commonstack.stacks.paths import NEXTCLOUD_DATA as DATA_DIR
from commonstack.stacks.paths import NEXTCLOUD_WEB_USER as WEB_USER
from commonstack.stacks.paths import REDIS_SOCKET

OCC = f"sudo -u {WEB_USER} php {CODE_DIR}/occ"
NOT_INSTALLED = (
    "Nextcloud is not installed here: only its prerequisites were deployed (no release was available); "
    "set nextcloud.archive or let the host reach download.nextcloud.com, then `commonstack deploy`"
)
# The cron timer runs every 5 minutes: three missed runs mean the background jobs are stuck.
CRON_LATE_SECONDS = 15 * 60

# What php-fpm must load (admin manual: installation, prerequisites), as `php -m` names them.
PHP_MODULES = (
    "ctype", "curl", "dom", "fileinfo", "filter", "gd", "hash", "iconv", "intl", "json", "libxml",
    "mbstring", "openssl", "posix", "session", "SimpleXML", "XMLReader", "XMLWriter", "zip", "zlib",
    "pdo_pgsql", "pgsql", "bcmath", "gmp", "bz2", "exif", "sodium", "apcu", "redis", "imagick",
    "Zend OPcache",
)  # fmt: skip
SECURITY_HEADERS = {
    "strict-transport-security": "max-age=",
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
    "x-frame-options": "SAMEORIGIN",
    "x-robots-tag": "noindex, nofollow",
    "x-permitted-cross-domain-policies": "none",
}
# Code, configuration and data that the site must never serve (the Caddyfile's @internal).
DENIED = ("/data/nextcloud.log", "/config/config.php", "/.htaccess", "/.user.ini", "/occ", "/3rdparty/autoload.php",
          "/lib/base.php", "/build/", "/tests/", "/templates/", "/console.php")  # fmt: skip


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def php(host, stack) -> str:
    """The PHP version of the host; skips when the nextcloud layer was never deployed here."""
    require_layer(stack, "nextcloud")
    version = stack["php_version"]
    if not host.package(f"php{version}-fpm").is_installed:
        pytest.skip(f"the nextcloud layer is not deployed on this host yet (no php{version}-fpm): `commonstack deploy`")
    return version


@pytest.fixture(scope="module")
def occ_status(host, php) -> dict | None:
    """`occ status` as JSON, None when there is no Nextcloud code on the host."""
    if not host.file(f"{CODE_DIR}/occ").exists:
        return None
    result = host.run(f"{OCC} status --output=json")
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        output = (result.stdout + result.stderr).strip().splitlines()
        pytest.fail(f"occ status does not answer: {output[-1] if output else 'no output'}")


@pytest.fixture(scope="module")
def installed(occ_status) -> dict:
    if occ_status is None:
        pytest.skip(NOT_INSTALLED)
    if not occ_status.get("installed"):
        pytest.skip("Nextcloud's code is in place but it is not installed: see the check 'occ status'")
    return occ_status


@pytest.fixture(scope="module")
def visitor(trust, stack) -> ssl.SSLContext:
    """What a visitor trusts (the trust fixture), for a host that serves Nextcloud."""
    require_layer(stack, "caddy")
    if "nextcloud" not in stack["hostnames"]:
        pytest.skip("nextcloud is not on this host")
    return trust


def _request(stack: dict, context: ssl.SSLContext, method: str, path: str, body: bytes | None = None,
             headers: dict | None = None) -> tuple[int, dict, bytes]:  # fmt: skip
    name = stack["hostnames"]["nextcloud"]
    try:
        return https_request(stack["address"], name, context, method, path, body, headers, timeout=60)
    except OSError as exc:
        pytest.fail(f"{name}: no HTTPS answer to {method} {path} ({exc}); see the caddy checks")


def _missing_security_headers(headers: dict) -> list[str]:
    return [name for name, value in SECURITY_HEADERS.items() if value not in headers.get(name, "")]


# --- PHP-FPM and the host --------------------------------------------------------------------


def test_php_fpm_runs_the_nextcloud_pool_for_caddy_only(host, stack, php):
    service = unit_state(host, stack, f"php{php}-fpm")
    assert service.is_running, f"PHP-FPM is down: `journalctl -u php{php}-fpm`"
    assert service.is_enabled, f"php{php}-fpm does not start at boot: `systemctl enable php{php}-fpm`"
    pool, default = f"/run/php/php{php}-fpm-nextcloud.sock", f"/etc/php/{php}/fpm/pool.d/www.conf"
    states = file_states(host, pool, default)
    sock = states.get(pool)
    assert sock and sock.is_socket, f"no Nextcloud pool socket: is /etc/php/{php}/fpm/pool.d/nextcloud.conf there?"
    assert (sock.user, sock.group, sock.permissions) == ("www-data", "caddy", 0o660), (
        f"the pool socket is {sock.user}:{sock.group} {sock.permissions:04o}; Caddy needs www-data:caddy 0660"
    )
    assert default not in states, "Debian's default www pool is back"


def slowest_commands(stack: dict) -> list[tuple[str, ...]]:
    """Started at the host's first check (ahead.py)."""
    if "nextcloud" not in stack["layers"]:
        return []
    php = stack["php_version"]
    return [(f"php-fpm{php} -m",), (f"php-fpm{php} -i",), ("php -i",)]


def test_php_fpm_loads_every_module_nextcloud_needs(host, php):
    loaded = {line.strip().lower() for line in ahead.check_output(host, f"php-fpm{php} -m").splitlines()}
    missing = [module for module in PHP_MODULES if module.lower() not in loaded]
    assert not missing, f"PHP-FPM lacks {', '.join(missing)}: reinstall the php{php}-* packages (`commonstack deploy`)"


def _ini(host, command: str) -> dict[str, str]:
    """`php -i` style output -> {directive: local value}."""
    values = {}
    for line in ahead.check_output(host, command).splitlines():
        parts = [p.strip() for p in line.split("=>")]
        if len(parts) >= 2:
            values.setdefault(parts[0], parts[1])
    return values


def _megabytes(value: str) -> float:
    number, unit = re.fullmatch(r"(-?\d+)([KMG]?)", value.strip().upper()).groups()
    return int(number) * {"": 1 / 2**20, "K": 1 / 1024, "M": 1, "G": 1024}[unit]


def test_php_settings_follow_the_admin_manual(host, php):
    fpm = _ini(host, f"php-fpm{php} -i")
    assert _megabytes(fpm["memory_limit"]) >= 512, f"memory_limit is {fpm['memory_limit']}; Nextcloud needs 512M"
    for directive in ("upload_max_filesize", "post_max_size"):
        assert _megabytes(fpm[directive]) >= 10 * 1024, f"{directive} is {fpm[directive]}: large uploads fail"
    assert fpm["opcache.enable"] == "On" and fpm["opcache.save_comments"] == "On", "OPcache is off or strips comments"
    assert int(fpm["opcache.interned_strings_buffer"]) >= 16, "opcache.interned_strings_buffer below 16"
    assert fpm["output_buffering"] in ("0", "Off", "no value"), "output_buffering is on: downloads are buffered"
    cli = _ini(host, "php -i")
    assert cli["apc.enable_cli"] == "On", "apc.enable_cli is off: occ and cron.php cannot use APCu"


def test_www_data_can_use_the_redis_socket(host, php):
    assert "redis" in host.user("www-data").groups, "www-data is not in group redis: it cannot open Redis's socket"
    result = host.run(f"sudo -u www-data redis-cli -s {REDIS_SOCKET} ping")
    assert result.stdout.strip() == "PONG", f"www-data gets no PONG from {REDIS_SOCKET}: {result.stderr.strip()}"


def test_data_folder_is_private_and_outside_the_web_root(host, php):
    data = file_states(host, DATA_DIR).get(DATA_DIR)
    assert data and data.is_directory, f"{DATA_DIR} is missing"
    assert (data.user, data.permissions) == ("www-data", 0o750), (
        f"{DATA_DIR} is {data.user} {data.permissions:04o}, not www-data 0750"
    )


def test_cron_timer_is_active(host, stack, php):
    timer = unit_state(host, stack, "nextcloud-cron.timer")
    assert timer.is_enabled and timer.is_running, (
        "nextcloud-cron.timer is not active: `systemctl status nextcloud-cron.timer`"
    )


# --- the site, from outside ------------------------------------------------------------------


def test_site_redirects_dav_discovery(stack, visitor):
    for path in ("/.well-known/caldav", "/.well-known/carddav"):
        status, headers, _ = _request(stack, visitor, "GET", path)
        assert status == 301 and headers.get("location", "").endswith("/remote.php/dav/"), (
            f"{path} answers {status} {headers.get('location', '')}: calendar and contact apps will not find the server"
        )
    status, headers, _ = _request(stack, visitor, "GET", "/.well-known/webfinger")
    assert status == 301 and headers.get("location", "").endswith("/index.php/.well-known/webfinger")


def test_site_never_serves_code_configuration_or_data(stack, visitor):
    for path in DENIED:
        status, headers, _ = _request(stack, visitor, "GET", path)
        assert status == 404, f"{path} answers {status}: check the @internal paths of the Caddyfile"
        missing = _missing_security_headers(headers)
        assert not missing, f"the 404 of {path} lacks {', '.join(missing)}: error responses must carry them too"


def test_status_php_says_installed_and_not_in_maintenance(stack, visitor, installed):
    status, headers, body = _request(stack, visitor, "GET", "/status.php")
    assert status == 200, f"status.php answers {status}: `journalctl -u php{stack['php_version']}-fpm`"
    missing = _missing_security_headers(headers)
    assert not missing, f"status.php lacks {', '.join(missing)}"
    report = json.loads(body)
    assert report["installed"] is True, "status.php says Nextcloud is not installed"
    assert report["maintenance"] is False, "Nextcloud is in maintenance mode: `occ maintenance:mode --off` when done"


def test_occ_status(stack, occ_status):
    if occ_status is None:
        pytest.skip(NOT_INSTALLED)
    assert occ_status.get("installed") is True, "occ status: Nextcloud is not installed; read the deploy's error"
    assert occ_status.get("maintenance") is False, "occ status: Nextcloud is in maintenance mode"
    assert occ_status.get("needsDbUpgrade") is False, "occ status: the database needs `occ upgrade`"
    require_release(stack["nextcloud"], occ_status.get("versionstring") or "", "Nextcloud")


def test_redis_does_the_file_locking(host, installed):
    def setting(*keys: str) -> str:
        return host.run(f"{OCC} config:system:get {' '.join(keys)}").stdout.strip()

    assert setting("memcache.locking") == "\\OC\\Memcache\\Redis", "file locking does not use Redis (memcache.locking)"
    assert setting("redis", "host") == REDIS_SOCKET, f"Nextcloud's redis host is not {REDIS_SOCKET}"
    assert setting("memcache.local") == "\\OC\\Memcache\\APCu", "the local cache is not APCu (memcache.local)"


def test_background_jobs_ran_recently(host, installed):
    mode = host.run(f"{OCC} config:app:get core backgroundjobs_mode").stdout.strip()
    assert mode == "cron", f"background jobs run by {mode or 'ajax'}, not by the cron timer: `occ background:cron`"
    last = host.run(f"{OCC} config:app:get core lastcron").stdout.strip()
    age = time.time() - int(last or 0)
    assert age < CRON_LATE_SECONDS, (
        f"cron.php last ran {int(age // 60)} minutes ago: `systemctl status nextcloud-cron.service`"
    )


def test_admin_webdav_upload_comes_back_intact(stack, visitor, installed):
    user, password = stack["nextcloud"]["admin_user"], stack["nextcloud"]["admin_password"]
    credentials = b64encode(f"{user}:{password}".encode()).decode()
    auth = {"Authorization": f"Basic {credentials}", "OCS-APIRequest": "true"}
    path = f"/remote.php/dav/files/{user}/commonstack-health-check.txt"
    content = f"commonstack health check {secrets.token_hex(16)}\n".encode()
    status, _, _ = _request(stack, visitor, "PUT", path, body=content, headers=auth)
    assert status in (201, 204), f"WebDAV upload as {user} answered {status} (401: the admin password in secrets.yaml)"
    try:
        status, _, body = _request(stack, visitor, "GET", path, headers=auth)
        assert status == 200 and body == content, f"the file uploaded by WebDAV came back as {status}, not intact"
    finally:
        _request(stack, visitor, "DELETE", path, headers=auth)  # to the trash bin, which expires it


# --- the group's apps, calendars and address books --------------------------------------------

# What a calendar or contacts client asks first: the collections in the user's home (RFC 4918 PROPFIND).
PROPFIND_BODY = (
    b'<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:resourcetype/><d:displayname/></d:prop></d:propfind>'
)
DAV_HINTS = {
    401: "the admin password in secrets.yaml is not Nextcloud's",
    404: "Nextcloud's dav app is disabled or the Caddyfile does not route /remote.php",
    405: "the web server does not pass PROPFIND to PHP",
}


def _admin_auth(stack: dict) -> dict:
    user, password = stack["nextcloud"]["admin_user"], stack["nextcloud"]["admin_password"]
    return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


def multistatus_hrefs(body: bytes) -> list[str]:
    """The hrefs of a WebDAV multistatus answer (RFC 4918, 13), decoded; [] when it is not one."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return []
    if root.tag != "{DAV:}multistatus":
        return []
    return [unquote(href.text or "") for href in root.iter("{DAV:}href")]


def _dav_home_answers(stack: dict, visitor: ssl.SSLContext, protocol: str, home: str) -> None:
    headers = {**_admin_auth(stack), "Depth": "1", "Content-Type": "application/xml; charset=utf-8"}
    status, _, body = _request(stack, visitor, "PROPFIND", home, body=PROPFIND_BODY, headers=headers)
    hint = DAV_HINTS.get(status, f"`journalctl -u php{stack['php_version']}-fpm`")
    assert status == 207, f"{protocol}: PROPFIND {home} as {stack['nextcloud']['admin_user']} answered {status}: {hint}"
    hrefs = multistatus_hrefs(body)
    assert home in hrefs, f"{protocol}: PROPFIND {home} answered 207 without that collection in it: not Nextcloud's DAV server?"


def test_the_groups_apps_are_enabled(host, stack, installed):
    result = host.run(f"{OCC} app:list --output=json")
    try:
        listing = json.loads(result.stdout.strip().splitlines()[-1])
        enabled = listing["enabled"]
    except (ValueError, IndexError, KeyError, TypeError):
        output = (result.stdout + result.stderr).strip().splitlines()
        pytest.fail(f"occ app:list does not answer: {output[-1] if output else 'no output'}")
    missing = [app for app in stack["nextcloud"]["apps"] if app not in enabled]
    assert not missing, (
        f"{', '.join(missing)} not enabled (nextcloud.apps): `commonstack deploy`, or `occ app:enable {missing[0]}`"
    )


def test_caldav_answers_for_the_admin(stack, visitor, installed):
    user = stack["nextcloud"]["admin_user"]
    _dav_home_answers(stack, visitor, "CalDAV", f"/remote.php/dav/calendars/{user}/")


def test_carddav_answers_for_the_admin(stack, visitor, installed):
    user = stack["nextcloud"]["admin_user"]
    _dav_home_answers(stack, visitor, "CardDAV", f"/remote.php/dav/addressbooks/users/{user}/")


def setup_check_errors(output: str) -> list[str]:
    """`occ setupchecks --output=json` -> "NAME: DESCRIPTION" of each check whose severity is error.

    Its JSON: {category: {check class: {name, severity, description, descriptionParameters,
    linkToDoc}}}; a description's {placeholders} name rich objects of descriptionParameters.
    Raises ValueError when the output holds no such JSON.
    """
    lines = output.strip().splitlines()
    results = json.loads(lines[-1]) if lines else None
    if not isinstance(results, dict):
        raise ValueError("not the JSON of occ setupchecks")
    errors = []
    for checks in results.values():
        for check_class, check in (checks or {}).items():
            if check.get("severity") != "error":
                continue
            description = check.get("description") or ""
            for key, parameter in (check.get("descriptionParameters") or {}).items():
                description = description.replace(f"{{{key}}}", str(parameter.get("name", "")))
            name = check.get("name") or check_class
            link = f" (see {check['linkToDoc']})" if check.get("linkToDoc") else ""
            errors.append(f"{name}: {' '.join(description.split())}{link}" if description else f"{name}{link}")
    return errors


def test_nextcloud_setup_checks_report_no_error(host, installed):
    # Exit 1 when any check is not a success (warnings too): the JSON says which.
    result = host.run_expect([0, 1], f"{OCC} setupchecks --output=json")
    try:
        errors = setup_check_errors(result.stdout)
    except ValueError:
        output = (result.stdout + result.stderr).strip().splitlines()
        pytest.fail(f"occ setupchecks does not answer: {output[-1] if output else 'no output'}")
    assert not errors, (
        "Nextcloud's setup checks (Administration settings > Overview) report: " + "; ".join(errors)
    )


def test_php_fpm_and_the_cron_job_are_sandboxed(host, php, stack):
    assert_sandboxed(host, stack, "nextcloud")


def test_nextcloud_logins_are_guarded_by_fail2ban(host, php, stack):
    assert_jails_active(host, stack, "nextcloud")


def test_config_php_is_readable_by_php_only(host, installed):
    config = host.file(f"{CODE_DIR}/config/config.php")
    assert (config.user, config.group) == (WEB_USER, WEB_USER) and not config.mode & 0o027, (
        f"{CODE_DIR}/config/config.php (the database password, Nextcloud's secret) is {config.mode:04o} "
        f"{config.user}:{config.group}, not 0640 {WEB_USER}:{WEB_USER}: `commonstack deploy` puts it back"
    )
