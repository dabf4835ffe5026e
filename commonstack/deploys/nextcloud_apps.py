"""The Nextcloud apps a group gets (``nextcloud.apps``: calendar and contacts by default), installed
and enabled once Nextcloud is.

They are not in the server tarball. Each app comes from Nextcloud's app store (``occ
app:install``, which picks the release that suits the server and checks its signature) on a host
that reaches the store, or from a local archive named in ``nextcloud.app_archives`` (an offline
profile must give one for every app not installed yet): checked on the controller first
(nextcloud_app_source.py), then copied, verified again and unpacked by
``/usr/local/sbin/commonstack-nextcloud-app-unpack``, and enabled with ``occ app:enable``.

The preflight (``nextcloud_apps_preflight``, called by the Nextcloud preflight) refuses before
any change: a pinned app release that does not suit the Nextcloud major, an offline profile
without an archive for an app to install, a damaged or unpinned archive, an unreachable store.

An app already in place is only enabled if it is disabled: the kit neither upgrades nor removes
apps, and leaves alone the apps a group's admin installed itself.

Example, in a pyinfra deploy file (after ``nextcloud(plan)``)::

    from commonstack.deploys.nextcloud_apps import nextcloud_apps
    nextcloud_apps(plan)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, QuoteString, StringCommand, operation

from commonstack.deploys.facts import DownloadProblem
from commonstack.deploys.nextcloud_app_source import (
    LocalAppArchive,
    check_app_archive,
    offline_message,
    require_app_compatibility,
    unreachable_store_message,
)
from commonstack.deploys.nextcloud_source import NextcloudSourceError, resolve_archive
from commonstack.deploys.preflight import SourceUnavailable
from commonstack.plan import HostPlan
from commonstack.stacks.paths import NEXTCLOUD_CODE as CODE_DIR
from commonstack.stacks.paths import NEXTCLOUD_WEB_USER as WEB_USER
from commonstack.stacks.paths import STATE_DIR
from commonstack.stacks.version_numbers import major as release_major
from commonstack.stacks.versions import versions

APPS_DIR = f"{CODE_DIR}/apps"  # where the app store puts apps too (the first writable apps path)
WORK_DIR = f"{STATE_DIR}/nextcloud"  # root only (deploys/nextcloud.py makes it)
APP_UNPACK = "/usr/local/sbin/commonstack-nextcloud-app-unpack"
OCC = ("runuser", "-u", WEB_USER, "--", "php", f"{CODE_DIR}/occ")


# --- facts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppsOnHost:
    """Nextcloud's apps by id, with their versions (`occ app:list`); empty before the install."""

    enabled: dict[str, str] = field(default_factory=dict)
    disabled: dict[str, str] = field(default_factory=dict)
    occ_problem: str | None = None  # what occ said when the list could not be read

    def version_of(self, app: str) -> str | None:
        return self.enabled.get(app) or self.disabled.get(app)


class NextcloudApps(FactBase[AppsOnHost]):
    """The apps of an installed Nextcloud, enabled and disabled (`occ app:list --output=json`).

    Read-only; nothing when Nextcloud is not installed (or PHP is missing)."""

    def command(self) -> str:
        occ = " ".join(OCC)
        return (
            f"if grep -qs \"'installed' => true\" {CODE_DIR}/config/config.php && command -v php >/dev/null 2>&1; "
            f"then {occ} app:list --output=json 2>&1 | tail -n 1; fi; true"
        )

    def default(self) -> AppsOnHost:
        return AppsOnHost()

    def process(self, output) -> AppsOnHost:
        text = "\n".join(output).strip()
        try:
            listing = json.loads(text)
            return AppsOnHost(enabled=dict(listing["enabled"]), disabled=dict(listing["disabled"]))
        except (ValueError, KeyError, TypeError):
            return AppsOnHost(occ_problem=text[:300] or "no output")


# --- operations ------------------------------------------------------------------------------


def _occ(*arguments: str) -> StringCommand:
    return StringCommand(*OCC, *(QuoteString(a) for a in arguments))


@operation()
def nextcloud_app(app: str, version: str | None, enabled: bool, archive: LocalAppArchive | None = None):
    """Install and enable a Nextcloud app: from a checked local archive, else from the app store.

    + app: the app's id, e.g. ``calendar``
    + version: its version in Nextcloud's apps folder (None: not there)
    + enabled: whether Nextcloud has it enabled
    + archive: a local archive already checked on the controller; None installs from the app store

    An app already there is never replaced, only enabled.

    **Example:**

    .. code:: python

        nextcloud_app(name="Nextcloud app calendar", app="calendar", version=None, enabled=False)
    """
    if version is not None and enabled:
        host.noop(f"{app} {version} is enabled")
        return
    if version is not None:
        yield _occ("app:enable", app)
        return
    if archive is None:  # the app store: occ picks the release for this server and checks its signature
        yield _occ("app:install", app)
        return
    local = f"{WORK_DIR}/{archive.path.name}"
    yield FileUploadCommand(str(archive.path), local, remote_temp_filename=host.get_temp_filename(local))
    # The archive goes whatever the outcome, as the server's does.
    yield StringCommand(
        APP_UNPACK, QuoteString(local), QuoteString(archive.sha256), QuoteString(app), APPS_DIR, WEB_USER,
        ";", "status=$?;", "rm", "-f", QuoteString(local), ";", "exit", "$status",
    )  # fmt: skip
    yield _occ("app:enable", app)


# --- preflight and deploy --------------------------------------------------------------------


def _group_folder() -> Path | None:
    folder = host.data.get("group_folder")  # set by inventories/targets.py
    return Path(folder) if folder else None


def app_sources(plan: HostPlan, on_host: AppsOnHost) -> dict[str, LocalAppArchive | None]:
    """Where each app to install comes from: its checked archive, or None for the app store.

    Apps already in Nextcloud's apps folder need no source and are left out. Raises
    NextcloudSourceError (a pin unsuited to the major, a bad archive) or SourceUnavailable
    (offline without an archive, or the store unreachable) before anything changes.
    """
    settings, major = plan.profile.nextcloud, release_major(plan.deploy_version("nextcloud"))
    if on_host.occ_problem is not None:
        raise NextcloudSourceError(
            f"{host.name}: Nextcloud's apps cannot be listed ({on_host.occ_problem[:100]}); "
            f"look at `sudo -u www-data php {CODE_DIR}/occ app:list`"
        )
    for app in settings.apps:
        require_app_compatibility(app, major)
    sources: dict[str, LocalAppArchive | None] = {}
    for app in settings.apps:
        if on_host.version_of(app) is not None:
            continue
        if app in settings.app_archives:
            path = resolve_archive(settings.app_archives[app], _group_folder())
            sources[app] = check_app_archive(app, path, major)
        elif plan.profile.offline:
            raise SourceUnavailable("nextcloud", offline_message(app))
        else:
            sources[app] = None
    from_store = [app for app, archive in sources.items() if archive is None]
    if from_store:
        problem = host.get_fact(DownloadProblem, url=versions().nextcloud_apps.store)
        if problem:
            raise SourceUnavailable("nextcloud", unreachable_store_message(from_store[0], host.name, problem))
    return sources


def nextcloud_apps_preflight(plan: HostPlan) -> None:
    """Refuse, before any change, apps the host cannot get or that do not suit the Nextcloud major."""
    app_sources(plan, host.get_fact(NextcloudApps))


def nextcloud_apps(plan: HostPlan) -> None:
    """Install and enable every app of ``nextcloud.apps`` (Nextcloud is installed by then)."""
    on_host = host.get_fact(NextcloudApps)
    sources = app_sources(plan, on_host)
    for app in plan.profile.nextcloud.apps:
        nextcloud_app(
            name=_describe(app, on_host, sources),
            app=app,
            version=on_host.version_of(app),
            enabled=app in on_host.enabled,
            archive=sources.get(app),
        )


def _describe(app: str, on_host: AppsOnHost, sources: dict[str, LocalAppArchive | None]) -> str:
    if app not in sources:
        return f"Nextcloud app {app}: enabled"
    archive = sources[app]
    if archive is None:
        return f"Nextcloud app {app}: install from the app store (occ app:install) and enable"
    return f"Nextcloud app {app} {archive.version}: copy, verify (sha256) and unpack the local archive, enable"
