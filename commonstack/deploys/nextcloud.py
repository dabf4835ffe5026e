"""Nextcloud from the signed upstream tarball on PHP-FPM (Debian), PostgreSQL and Redis, behind Caddy.

What a deploy of this layer does, in order:

1. Preflight (``nextcloud_preflight``, run by stack.py before any layer adds an operation, so a
   refusal changes nothing on the host): the pinned Nextcloud major must run on the host's PHP;
   and unless Nextcloud already runs the pinned release, its source must be usable — the local
   copy named by ``nextcloud.archive`` must have the published sha256 and its ``.asc`` next to
   it, or the host must reach the download URL. An unreachable download is SourceUnavailable:
   `deploy` fails the host with one line naming the URL and the ``nextcloud.archive``
   alternative, `try` leaves the layer out.
2. Prerequisites: PHP-FPM and the PHP modules Nextcloud requires and recommends, php.ini and
   OPcache as its admin manual recommends, a pool of its own sized by the sizing rules (socket
   for Caddy only; Debian's default ``www`` pool removed), www-data in group redis (Redis
   socket), the data folder outside the web root, the cron service and timer.
3. The release: downloaded (or copied from the controller), then verified on the host — sha256
   and GPG signature by the pinned key — before anything is extracted
   (``/usr/local/sbin/commonstack-nextcloud-unpack``); it appears in /var/www/nextcloud at once.
4. ``occ maintenance:install`` once (PostgreSQL role/database ``nextcloud`` from the postgres
   layer), then the system settings (trusted_domains, overwrite.cli.url, APCu + Redis,
   default_phone_region, maintenance_window_start) set only where they differ, background
   jobs run by the systemd timer.
5. The apps the group gets (``nextcloud.apps``: calendar and contacts by default), from the app
   store or from local archives, installed and enabled: deploys/nextcloud_apps.py. Their
   preflight runs with step 1's.

Secrets never appear in a command line of the deploy: they reach the host in a root-only file
that the install removes; the admin password is set through ``OC_PASS`` (the install itself
uses a throwaway one). The database password is on ``occ maintenance:install``'s argument list
while that one command runs (occ has no other way to take it).

Prerequisites without the release: with ``nextcloud.install: prerequisites`` in the profile, the
source preflight and steps 3-4 are left out (PHP-FPM, the pool, the Caddy site and the timer are
deployed; the checks that need Nextcloud skip, saying why); a later deploy with ``full`` installs
Nextcloud. Without the switch, an unusable source fails
the host before any change: never a half-installed Nextcloud.

Example, in a pyinfra deploy file::

    from commonstack.deploys.nextcloud import nextcloud
    nextcloud(plan)   # plan = commonstack.plan.plan_host(profile, host, secrets, release)
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, replace
from io import BytesIO, StringIO
from pathlib import Path
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, QuoteString, StringCommand, deploy, operation
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util.files import chmod, chown

from commonstack.deploys.configs import changed, put_configs
from commonstack.deploys.facts import DownloadProblem
from commonstack.deploys.nextcloud_apps import nextcloud_apps, nextcloud_apps_preflight
from commonstack.deploys.nextcloud_source import (
    LocalArchive,
    NextcloudRelease,
    NextcloudSourceError,
    check_local_archive,
    pinned_release,
    release_keyring,
    require_php_compatibility,
    resolve_archive,
    unreachable_message,
)
from commonstack.deploys.preflight import SourceUnavailable, require_upstream
from commonstack.plan import HostPlan
from commonstack.stacks.paths import NEXTCLOUD_ADMIN as ADMIN_USER
from commonstack.stacks.paths import NEXTCLOUD_CODE as CODE_DIR
from commonstack.stacks.paths import NEXTCLOUD_DATA as DATA_DIR
from commonstack.stacks.paths import NEXTCLOUD_WEB_USER as WEB_USER
from commonstack.stacks.paths import REDIS_SOCKET, STATE_DIR
from commonstack.stacks.versions import versions

WORK_DIR = f"{STATE_DIR}/nextcloud"  # root only: downloads, the one-time install secrets
# config.php holds the database password and Nextcloud's secret: readable by PHP (www-data) only.
CONFIG_PHP = f"{CODE_DIR}/config/config.php"
CONFIG_MODE = "0640"
KEYRING = "/usr/share/keyrings/commonstack-nextcloud-release.gpg"
UNPACK = "/usr/local/sbin/commonstack-nextcloud-unpack"
OCC = ("runuser", "-u", WEB_USER, "--", "php", f"{CODE_DIR}/occ")

# --- facts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NextcloudOnHost:
    """What /var/www/nextcloud holds: the release's version, whether it is installed, its settings."""

    version: str | None = None
    installed: bool = False
    system: dict[str, Any] | None = None  # `occ config:list system` (sensitive values removed)
    background_jobs: str | None = None
    occ_problem: str | None = None  # what occ said when its settings could not be read


class NextcloudState(FactBase[NextcloudOnHost]):
    """Nextcloud's code version (version.php), install flag (config.php) and system settings.

    Read-only; needs neither PHP nor Nextcloud to be there (then it says so)."""

    def command(self) -> str:
        occ = " ".join(OCC)
        return (
            f"if [ -f {CODE_DIR}/version.php ]; then "
            f"echo \"version=$(grep -o \"OC_VersionString = '[^']*'\" {CODE_DIR}/version.php | cut -d\"'\" -f2)\"; fi; "
            f"if grep -qs \"'installed' => true\" {CODE_DIR}/config/config.php; then echo installed=yes; "
            "if command -v php >/dev/null 2>&1; then "
            # printf, not echo: dash's echo would turn the JSON's \\ into \ (\\OC\\Memcache\\APCu).
            f"printf 'system=%s\\n' \"$({occ} config:list system --output=json 2>&1 | tr -d '\\n')\"; "
            f"printf 'background_jobs=%s\\n' \"$({occ} config:app:get core backgroundjobs_mode 2>/dev/null)\"; "
            "fi; fi; true"
        )

    def default(self) -> NextcloudOnHost:
        return NextcloudOnHost()

    def process(self, output) -> NextcloudOnHost:
        values = dict(line.split("=", 1) for line in output if "=" in line)
        system, problem = None, None
        if "system" in values:
            try:
                system = json.loads(values["system"])["system"]
            except (ValueError, KeyError, TypeError):
                problem = values["system"][:300] or "no output"
        return NextcloudOnHost(
            version=values.get("version") or None,
            installed=values.get("installed") == "yes",
            system=system,
            background_jobs=values.get("background_jobs") or None,
            occ_problem=problem,
        )


class ReleaseVersion(FactBase[str | None]):
    """The Nextcloud version a folder's version.php names (None: no release there)."""

    def command(self, path: str) -> str:
        return f"grep -o \"OC_VersionString = '[^']*'\" {shlex.quote(path)}/version.php 2>/dev/null | cut -d\"'\" -f2; true"

    def process(self, output) -> str | None:
        lines = [line.strip() for line in output if line.strip()]
        return lines[0] if lines else None


def installed_version() -> str | None:
    """The Nextcloud release installed on the current host (None: none, or not installed yet)."""
    on_host = host.get_fact(NextcloudState)
    return on_host.version if on_host.installed else None


# --- operations ------------------------------------------------------------------------------


def _occ(*arguments: str) -> StringCommand:
    return StringCommand(*OCC, *(QuoteString(a) for a in arguments))


@operation()
def nextcloud_code(
    release: NextcloudRelease,
    installed_version: str | None,
    archive: LocalArchive | None = None,
    target: str = CODE_DIR,
):
    """Put the release in /var/www/nextcloud: fetched (or copied), verified, then unpacked.

    + release: the pinned release (version, URL, sha256, key fingerprint)
    + installed_version: the version already in `target` (None: nothing there)
    + archive: a local copy already checked on the controller; None downloads ``release.url``
    + target: where the release goes (an upgrade unpacks the new release beside the running one)

    **Example:**

    .. code:: python

        nextcloud_code(name="Nextcloud 32.0.2", release=pinned_release(), installed_version=None)
    """
    if installed_version == release.version:
        host.noop(f"Nextcloud {release.version} is in {target}")
        return
    local = f"{WORK_DIR}/{release.filename}"
    sha256 = release.sha256
    if archive is not None:
        for source, dest in ((archive.path, local), (archive.signature, f"{local}.asc")):
            yield FileUploadCommand(str(source), dest, remote_temp_filename=host.get_temp_filename(dest))
        sha256 = archive.sha256
    else:
        downloads = [(release.url, local), (release.signature_url, f"{local}.asc")]
        if sha256 is None:
            downloads.append((release.checksum_url, f"{local}.sha256"))
        for url, dest in downloads:
            yield StringCommand(
                "curl", "-fsSL", "--retry", "3", "--connect-timeout", "20",
                "-o", QuoteString(f"{dest}.part"), QuoteString(url),
                "&&", "mv", QuoteString(f"{dest}.part"), QuoteString(dest),
            )  # fmt: skip
    if sha256:
        expected = QuoteString(sha256)
    else:  # the published .sha256, downloaded above
        expected = StringCommand("\"$(cut -d' ' -f1", QuoteString(f"{local}.sha256"), ')"')
    # The archive goes whatever the outcome: 260 MB matter on an SD card, and a refused file is useless.
    yield StringCommand(
        UNPACK, QuoteString(local), expected, KEYRING, release.fingerprint, QuoteString(target), WEB_USER,
        ";", "status=$?;", "rm", "-f", QuoteString(local), QuoteString(f"{local}.asc"), QuoteString(f"{local}.sha256"),
        ";", "exit", "$status",
    )  # fmt: skip


def install_script(admin_email: str) -> str:
    """The one-time `occ maintenance:install`, reading its secrets from WORK_DIR/install.env."""
    occ = " ".join(OCC)
    return f"""set -eu
env_file={WORK_DIR}/install.env
trap 'rm -f "$env_file"' EXIT
chmod 600 "$env_file"
. "$env_file"
throwaway=$(head -c 30 /dev/urandom | base64 | tr -d '/+=\\n')
{occ} maintenance:install --no-interaction --database=pgsql --database-host=127.0.0.1 \\
  --database-name=nextcloud --database-user=nextcloud --database-pass="$NEXTCLOUD_DATABASE_PASSWORD" \\
  --admin-user={ADMIN_USER} --admin-pass="$throwaway" --admin-email={shlex.quote(admin_email)} \\
  --data-dir={DATA_DIR}
OC_PASS=$NEXTCLOUD_ADMIN_PASSWORD {occ} user:resetpassword --password-from-env {ADMIN_USER}
chmod {CONFIG_MODE} {CONFIG_PHP}
"""


def install_secrets(database_password: str, admin_password: str) -> StringIO:
    """The install's secrets as a file. A file object, not strings: pyinfra keeps every operation
    argument as text (for its own logs) and shows a file object only as its hash."""
    return StringIO(
        f"NEXTCLOUD_DATABASE_PASSWORD={shlex.quote(database_password)}\n"
        f"NEXTCLOUD_ADMIN_PASSWORD={shlex.quote(admin_password)}\n"
    )


@operation()
def nextcloud_install(installed: bool, secrets: StringIO, admin_email: str):
    """`occ maintenance:install` with PostgreSQL, only when Nextcloud is not installed yet.

    + installed: whether config.php already says so
    + secrets: ``install_secrets(...)``: the `nextcloud` role's password (postgres layer) and the
      password of the Nextcloud user ``admin``
    + admin_email: that user's email

    The passwords reach the host in a root-only file (removed by the install), never in a
    command line of this operation.

    **Example:**

    .. code:: python

        nextcloud_install(name="Install Nextcloud", installed=False,
                          secrets=install_secrets(db, admin), admin_email="admin@example.org")
    """
    if installed:
        host.noop("Nextcloud is installed")
        return
    env_file = f"{WORK_DIR}/install.env"
    yield FileUploadCommand(secrets, env_file, remote_temp_filename=host.get_temp_filename(env_file))
    yield StringCommand(install_script(admin_email))


def system_config_commands(wanted: dict[str, Any], current: dict[str, Any]) -> list[list[str]]:
    """The `occ config:system:*` argument lists that turn `current` into `wanted` (only what differs).

    Lists and maps are rewritten whole (delete, then set each entry), so nothing stale stays.
    """
    commands: list[list[str]] = []
    for key, value in wanted.items():
        if key in current and current[key] == value:
            continue
        if isinstance(value, (list, dict)):
            if key in current:
                commands.append(["config:system:delete", key])
            entries = enumerate(value) if isinstance(value, list) else value.items()
            commands += [["config:system:set", key, str(index), *_typed(item)] for index, item in entries]
        else:
            commands.append(["config:system:set", key, *_typed(value)])
    return commands


def _typed(value: Any) -> list[str]:
    if isinstance(value, bool):
        return ["--type=boolean", f"--value={'true' if value else 'false'}"]
    if isinstance(value, int):
        return ["--type=integer", f"--value={value}"]
    return [f"--value={value}"]


@operation()
def nextcloud_system_config(wanted: dict[str, Any], current: dict[str, Any] | None):
    """Set Nextcloud's system settings (config.php) that differ from `wanted`.

    + wanted: setting -> value (str, int, bool, or a list/map of those)
    + current: `occ config:list system` as read before the deploy (None: not installed yet)

    **Example:**

    .. code:: python

        nextcloud_system_config(name="Settings", wanted={"default_phone_region": "DE"}, current={})
    """
    commands = system_config_commands(wanted, current or {})
    if not commands:
        host.noop("Nextcloud's system settings are as declared")
        return
    for arguments in commands:
        yield _occ(*arguments)


@operation()
def private_file(path: str, user: str, group: str, mode: str):
    """Give a file that a service writes itself its owner and mode; never create it.

    + path: the file (nothing happens while it does not exist)
    + user, group: its owner and group
    + mode: its mode, e.g. "0640"

    **Example:**

    .. code:: python

        private_file(name="config.php is private", path="/var/www/nextcloud/config/config.php",
                     user="www-data", group="www-data", mode="0640")
    """
    info = host.get_fact(File, path=path)
    if not info:
        host.noop(f"{path} does not exist yet")
        return
    if (info["user"], info["group"]) == (user, group) and info["mode"] == int(mode):
        host.noop(f"{path} is {mode} {user}:{group}")
        return
    if (info["user"], info["group"]) != (user, group):
        yield chown(path, user, group)
    if info["mode"] != int(mode):
        yield chmod(path, mode)


@operation()
def nextcloud_background_jobs(mode: str | None):
    """Background jobs run by cron (our systemd timer), not by page visits (ajax)."""
    if mode == "cron":
        host.noop("background jobs already run by cron")
        return
    yield _occ("background:cron")


# --- the deploy ------------------------------------------------------------------------------


def wanted_system_config(plan: HostPlan) -> dict[str, Any]:
    """config.php settings the kit declares (admin manual: installation, caching, background jobs)."""
    hostname = plan.profile.hostnames()["nextcloud"]
    wanted: dict[str, Any] = {
        "trusted_domains": [hostname],
        "overwrite.cli.url": f"https://{hostname}",
        "memcache.local": "\\OC\\Memcache\\APCu",
        "memcache.distributed": "\\OC\\Memcache\\Redis",
        "memcache.locking": "\\OC\\Memcache\\Redis",
        "redis": {"host": REDIS_SOCKET, "port": 0},
        # Heavy background jobs run from 01:00 to 05:00 UTC (admin manual: background jobs).
        "maintenance_window_start": 1,
        # Login guessing: Nextcloud slows each address down (on by default; declared so it stays on)
        # and logs every failure, with the address, to the journal, where fail2ban reads it
        # (base's jail commonstack-nextcloud). Level 2 (warning) is where failed logins are logged.
        "auth.bruteforce.protection.enabled": True,
        "log_type": "syslog",
        "syslog_tag": "Nextcloud",
        "loglevel": 2,
    }
    if plan.profile.nextcloud.default_phone_region:
        wanted["default_phone_region"] = plan.profile.nextcloud.default_phone_region
    return wanted


def group_folder() -> Path | None:
    """The group's folder, which relative profile paths start from (inventories/GROUP/)."""
    folder = host.data.get("group_folder")  # set by inventories/targets.py
    return Path(folder) if folder else None


def _source(plan: HostPlan, release: NextcloudRelease, on_host: NextcloudOnHost) -> LocalArchive | None:
    """What the code step will use (None: the download, or nothing to fetch); refusals raise."""
    if on_host.version == release.version:
        return None  # nothing to fetch
    if on_host.version is not None:
        raise NextcloudSourceError(
            f"{host.name}: {CODE_DIR} holds Nextcloud {on_host.version}, not installed, and the profile asks "
            f"for {release.version}: a deploy never replaces a release; remove {CODE_DIR} if it is a failed install"
        )
    return release_source(plan, release)


def release_source(plan: HostPlan, release: NextcloudRelease) -> LocalArchive | None:
    """The local copy of `release` to upload (None: the host downloads it); refusals raise."""
    if plan.profile.nextcloud.archive is not None:
        return check_local_archive(resolve_archive(plan.profile.nextcloud.archive, group_folder(), release), release)
    require_upstream(plan, "nextcloud", release.url, instead="set nextcloud.archive to a local copy")
    problem = host.get_fact(DownloadProblem, url=release.url)
    if problem:
        raise SourceUnavailable("nextcloud", unreachable_message(release, host.name, problem))
    return None


def deployed_release(plan: HostPlan) -> NextcloudRelease:
    """The release a deploy converges to: the one running (a deploy never changes it, `commonstack
    upgrade` does), else the one the profile asks for."""
    version = plan.deploy_version("nextcloud")
    if version not in versions().nextcloud.releases:  # only ever the running one: nothing is fetched
        pins = versions().nextcloud
        return replace(pinned_release(), version=version, url=pins.url_of(version), sha256=None)
    return pinned_release(version)


def nextcloud_preflight(plan: HostPlan) -> None:
    """Refuse, before anything changes on the host, a release it cannot get, trust or run.

    Raises SourceUnavailable when the download cannot be reached (`try` then leaves the layer
    out), NextcloudSourceError for everything else (a damaged or unsigned local copy, a release
    too new for the host's PHP, another release already installed). Nothing is checked with
    COMMONSTACK_NEXTCLOUD_PREREQUISITES_ONLY set, as nothing is fetched then.
    """
    release = deployed_release(plan)
    require_php_compatibility(release, plan.release.codename)
    if plan.profile.nextcloud.install == "prerequisites":
        return
    _source(plan, release, host.get_fact(NextcloudState))
    release_keyring(release)
    nextcloud_apps_preflight(plan)


@deploy("Nextcloud")
def nextcloud(plan: HostPlan) -> None:
    """PHP-FPM, the verified Nextcloud release, its install and settings (see the module docstring)."""
    nextcloud_preflight(plan)  # when called on its own; stack.py runs it before every layer's operations
    if plan.profile.nextcloud.install == "prerequisites":
        _prerequisites(plan)
        return
    release = deployed_release(plan)
    on_host = host.get_fact(NextcloudState)
    archive = _source(plan, release, on_host)
    if on_host.installed and on_host.system is None:
        raise NextcloudSourceError(
            f"{host.name}: Nextcloud's settings cannot be read ({on_host.occ_problem}); "
            f"look at `sudo -u www-data php {CODE_DIR}/occ status`"
        )

    _prerequisites(plan)
    files.put(
        name="Nextcloud's release signing key (pinned)",
        src=BytesIO(release_keyring(release)),
        dest=KEYRING,
        mode="0644",
    )
    nextcloud_code(
        name=f"Nextcloud {release.version}: fetch, verify (sha256, GPG) and unpack into {CODE_DIR}",
        release=release,
        installed_version=on_host.version,
        archive=archive,
    )
    installed = nextcloud_install(
        name="Install Nextcloud (occ maintenance:install, PostgreSQL)",
        installed=on_host.installed,
        secrets=install_secrets(plan.secrets["postgres_nextcloud_password"], plan.secrets["nextcloud_admin_password"]),
        admin_email=plan.profile.admin_email,
    )
    nextcloud_system_config(
        name="Nextcloud's system settings (domains, caches, Redis locking, maintenance window)",
        wanted=wanted_system_config(plan),
        current=on_host.system,
    )
    nextcloud_background_jobs(name="Nextcloud's background jobs run by the cron timer", mode=on_host.background_jobs)
    # The install sets it so; this puts back what a manual change or an old deploy left.
    private_file(name=f"{CONFIG_PHP} readable by PHP only", path=CONFIG_PHP, user=WEB_USER, group=WEB_USER,
                 mode=CONFIG_MODE)  # fmt: skip
    server.shell(
        name="Run Nextcloud's background jobs once after the install",
        commands=["systemctl start nextcloud-cron.service"],
        _if=changed([installed]),
    )
    nextcloud_apps(plan)  # calendar, contacts...: nextcloud_apps.py


def _prerequisites(plan: HostPlan) -> None:
    php = plan.php_version
    apt.packages(
        name="Install PHP-FPM and the PHP modules Nextcloud needs",
        packages=plan.packages_of(("nextcloud",)),
        no_recommends=True,
    )
    configs = put_configs(plan, "nextcloud")
    paths = [f.path for f in plan.files_of("nextcloud")]
    php_configs = [op for path, op in zip(paths, configs) if path.startswith("/etc/php/")]
    units = [op for path, op in zip(paths, configs) if path.startswith("/etc/systemd/system/")]
    default_pool = files.file(
        name="Remove Debian's default PHP-FPM pool (www)",
        path=f"/etc/php/{php}/fpm/pool.d/www.conf",
        present=False,
    )
    redis_group = server.user(
        name="www-data may use Redis's socket (group redis)",
        user=WEB_USER,
        groups=["redis"],
        append=True,
        ensure_home=False,
    )
    files.directory(name="Web root /var/www", path="/var/www", user="root", group="root", mode="0755")
    files.directory(name="/var/lib/nextcloud", path="/var/lib/nextcloud", user="root", group="root", mode="0755")
    files.directory(
        name=f"Nextcloud's data folder {DATA_DIR}, outside the web root",
        path=DATA_DIR,
        user=WEB_USER,
        group=WEB_USER,
        mode="0750",
    )
    files.directory(name=f"Release work folder {WORK_DIR}", path=WORK_DIR, user="root", group="root", mode="0700")
    php_sandbox = [op for path, op in zip(paths, configs) if path.startswith(f"/etc/systemd/system/php{php}-fpm")]
    systemd.daemon_reload(name="Reload systemd for PHP-FPM's sandbox and Nextcloud's cron units", _if=changed(units))
    systemd.service(name="PHP-FPM running", service=f"php{php}-fpm", running=True, enabled=True)
    systemd.service(
        name="Restart PHP-FPM for the new settings or sandbox",
        service=f"php{php}-fpm",
        restarted=True,
        _if=changed(php_configs, php_sandbox, [default_pool, redis_group]),
    )
    systemd.service(name="Nextcloud cron timer enabled", service="nextcloud-cron.timer", running=True, enabled=True)
