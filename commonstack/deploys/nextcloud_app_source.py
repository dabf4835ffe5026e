"""Where a Nextcloud app comes from, and what a local app archive must prove before it is used.

Pure Python (no pyinfra), like nextcloud_source.py for the server: the deploy calls these on the
controller before any host changes. An app a group gets (``nextcloud.apps``) comes from one of:

- Nextcloud's app store, on a host that reaches it: ``occ app:install`` picks the release that
  suits the server and checks the app's signature itself;
- a local archive named in the profile (``nextcloud.app_archives.APP``, absolute or relative to
  the group's folder) of the release pinned in versions.yaml (``nextcloud_apps.releases``). It
  must have the pinned sha256, and its structure is checked here, before anything is copied or
  extracted: one folder named after the app, only files and folders in it (no links, no absolute
  or ``..`` paths), and an appinfo/info.xml naming that app, that version, and Nextcloud majors
  that include the server's. The host checks the sha256 again before extracting
  (templates/nextcloud/usr/local/sbin/commonstack-nextcloud-app-unpack.j2).

Either way the pinned release, where there is one, must suit the Nextcloud major the kit deploys.
"""

from __future__ import annotations

import tarfile
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from commonstack.deploys.nextcloud_source import NextcloudSourceError, file_sha256
from commonstack.stacks.versions import VERSIONS_FILE, NextcloudAppPin, versions

APPS_KEY = "nextcloud.apps"
ARCHIVES_KEY = "nextcloud.app_archives"


def pinned_app(app: str) -> NextcloudAppPin | None:
    """The release of `app` pinned in versions.yaml, None when the kit pins none."""
    return versions().nextcloud_apps.releases.get(app)


def require_app_compatibility(app: str, major: int) -> None:
    """The pinned release of `app` (if any) must support Nextcloud `major`: one line otherwise."""
    pin = pinned_app(app)
    if pin is not None and not pin.suits(major):
        raise NextcloudSourceError(
            f"{APPS_KEY}: {app} {pin.version} does not suit Nextcloud {major} (it supports {_majors(pin)}): "
            f"pin a {app} release for Nextcloud {major} in {VERSIONS_FILE}"
        )


def _majors(pin: NextcloudAppPin) -> str:
    if pin.min_major == pin.max_major:
        return f"Nextcloud {pin.min_major} only"
    return f"Nextcloud {pin.min_major} to {pin.max_major}"


@dataclass(frozen=True)
class LocalAppArchive:
    """A local app archive whose sha256 and structure were checked; the host checks the sha256 again."""

    app: str
    version: str
    path: Path
    sha256: str


def offline_message(app: str) -> str:
    """What an offline profile must give for `app` (one line, for SourceUnavailable)."""
    pin = pinned_app(app)
    if pin is None:
        return (
            f"the profile says offline: true, so {app} is not fetched from Nextcloud's app store, and "
            f"{VERSIONS_FILE.name} pins no {app} release for a local archive: remove {app} from {APPS_KEY}"
        )
    return (
        f"the profile says offline: true, so {app} is not fetched from Nextcloud's app store "
        f"(set {ARCHIVES_KEY}.{app} to a copy of {pin.filename})"
    )


def unreachable_store_message(app: str, host_name: str, reason: str) -> str:
    """One short line (the runner keeps 300 characters): what, from where, and the way out."""
    reason = " ".join(reason.split()) or "no answer"
    if len(reason) > 40:
        reason = reason[:39] + "…"
    store = versions().nextcloud_apps.store
    pin = pinned_app(app)
    copy = f"a copy of {pin.filename}" if pin else f"a local archive of {app}"
    return f"{host_name} cannot reach {store} ({reason}) to install {app}; set {ARCHIVES_KEY}.{app} to {copy}"


def check_app_archive(app: str, path: Path, major: int) -> LocalAppArchive:
    """Refuse, before anything is copied or extracted, an archive that is not the pinned release of `app`."""
    where = f"{ARCHIVES_KEY}.{app}"
    pin = pinned_app(app)
    if pin is None:
        raise NextcloudSourceError(
            f"{where}: {VERSIONS_FILE.name} pins no {app} release, so no local archive of it can be checked: "
            f"install {app} from the app store (a host with internet) or remove it from {APPS_KEY}"
        )
    require_app_compatibility(app, major)
    if not path.is_file():
        raise NextcloudSourceError(
            f"{where}: {path}: no such file; download {pin.url} to that place (paths are relative to the group's folder)"
        )
    if pin.sha256 is None:
        raise NextcloudSourceError(
            f"{where}: {VERSIONS_FILE.name} pins no sha256 for {app} {pin.version}, so its archive cannot be "
            "verified: pin `sha256sum` of the published archive there, or install it from the app store"
        )
    actual = file_sha256(path)
    if actual != pin.sha256:
        raise NextcloudSourceError(
            f"{where}: {path} has sha256 {actual[:12]}…, not the pinned {pin.sha256[:12]}… of {pin.filename}: "
            "damaged or another release; nothing was extracted"
        )
    _check_structure(app, path, pin, major, where)
    return LocalAppArchive(app=app, version=pin.version, path=path, sha256=actual)


def _check_structure(app: str, path: Path, pin: NextcloudAppPin, major: int, where: str) -> None:
    """One folder APP holding only files and folders, and an info.xml that matches the pin and the major."""
    refused = f"{where}: {path} is refused (nothing was extracted):"
    try:
        with tarfile.open(path, "r:*") as archive:
            members = archive.getmembers()
            for member in members:
                parts = PurePosixPath(member.name).parts
                if member.name.startswith("/") or ".." in parts or not parts or parts[0] != app:
                    raise NextcloudSourceError(f"{refused} {member.name!r} lies outside the folder {app}/")
                if not (member.isfile() or member.isdir()):
                    raise NextcloudSourceError(f"{refused} {member.name!r} is a link or a special file")
            info = next((m for m in members if m.name.rstrip("/") == f"{app}/appinfo/info.xml"), None)
            if info is None or not info.isfile():
                raise NextcloudSourceError(f"{refused} it holds no {app}/appinfo/info.xml")
            content = archive.extractfile(info).read()  # read into memory, never written out
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise NextcloudSourceError(f"{refused} not a readable tar archive ({exc})") from None
    try:
        root = ElementTree.fromstring(content)
    except ElementTree.ParseError as exc:
        raise NextcloudSourceError(f"{refused} its appinfo/info.xml is not XML ({exc})") from None
    found_id, found_version = root.findtext("id", "").strip(), root.findtext("version", "").strip()
    if (found_id, found_version) != (app, pin.version):
        raise NextcloudSourceError(
            f"{refused} its appinfo/info.xml says {found_id or '?'} {found_version or '?'}, "
            f"not the pinned {app} {pin.version}"
        )
    nextcloud = root.find("dependencies/nextcloud")
    low = _major_of(nextcloud.get("min-version") if nextcloud is not None else None, 0)
    high = _major_of(nextcloud.get("max-version") if nextcloud is not None else None, 10**6)
    if not low <= major <= high:
        raise NextcloudSourceError(
            f"{refused} {app} {pin.version} declares Nextcloud {low} to {high} in its appinfo/info.xml, not {major}"
        )


def _major_of(version: str | None, default: int) -> int:
    """The major of an info.xml version attribute ("32", "32.0.1"); `default` when absent."""
    if not version:
        return default
    head = version.split(".")[0]
    return int(head) if head.isdigit() else default
