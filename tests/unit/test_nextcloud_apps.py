"""Nextcloud's apps: what a group gets, where each app comes from, and what a local app archive
must prove before anything is extracted (on the controller, and again by the host's script, which
runs here for real with sh, sha256sum and tar). The archives are STAND-INS made by these tests:
an appinfo/info.xml and a file, never the real apps. No network is used.
"""

from __future__ import annotations

import grp
import hashlib
import io
import os
import pwd
import subprocess
import tarfile
from pathlib import Path

import pytest

from commonstack.deploys import nextcloud_app_source as source
from commonstack.deploys import nextcloud_apps
from commonstack.deploys.nextcloud_source import NextcloudSourceError, pinned_release
from commonstack.deploys.preflight import SourceUnavailable
from commonstack.errors import ProfileError
from commonstack.plan import plan_host
from commonstack.stacks.loader import load_preset, load_profile, preset_names
from commonstack.stacks.model import StackProfile
from commonstack.stacks.versions import NextcloudAppPin, versions
from tests.unit.pyinfra_tables import FakeHost, _as_current

MAJOR = pinned_release().major


# --- stand-in app archives -------------------------------------------------------------------


def info_xml(app: str, version: str, low: int | None = MAJOR, high: int | None = MAJOR) -> str:
    limits = "".join(f' {name}="{value}"' for name, value in (("min-version", low), ("max-version", high)) if value)
    return (
        f'<?xml version="1.0"?>\n<info><id>{app}</id><name>STAND-IN {app}</name><version>{version}</version>'
        f"<dependencies><php min-version=\"8.1\"/><nextcloud{limits}/></dependencies></info>\n"
    )


def make_app_archive(path: Path, app: str = "calendar", version: str = "6.0.2", *, info: str | None = None,
                     extra: list[tarfile.TarInfo] = ()) -> Path:  # fmt: skip
    """A .tar.gz laid out like the app store's (APP/ at the top), holding a stand-in app."""
    files = {f"{app}/appinfo/info.xml": info if info is not None else info_xml(app, version),
             f"{app}/README.md": f"commonstack TEST STAND-IN, not the {app} app\n"}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for folder in (app, f"{app}/appinfo"):
            entry = tarfile.TarInfo(folder)
            entry.type, entry.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(entry)
        for name, text in files.items():
            data = text.encode()
            entry = tarfile.TarInfo(name)
            entry.size, entry.mode = len(data), 0o644
            archive.addfile(entry, io.BytesIO(data))
        for entry in extra:
            archive.addfile(entry, io.BytesIO(b"x" * entry.size) if entry.isfile() else None)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def pin(monkeypatch):
    """Pin app releases for a test (versions.yaml itself is untouched): pin(calendar=archive, ...)."""

    def pin_apps(**releases: Path | dict) -> None:
        pinned = versions()
        pins = dict(pinned.nextcloud_apps.releases)
        for app, value in releases.items():
            fields = value if isinstance(value, dict) else {"sha256": sha256(value)}
            pins[app] = pins.get(app, NextcloudAppPin(version="6.0.2", url=f"https://example.invalid/{app}-v6.0.2.tar.gz",
                                                      sha256=None, min_major=MAJOR, max_major=MAJOR)).model_copy(update=fields)  # fmt: skip
        patched = pinned.model_copy(
            update={"nextcloud_apps": pinned.nextcloud_apps.model_copy(update={"releases": pins})}
        )
        monkeypatch.setattr(source, "versions", lambda: patched)
        monkeypatch.setattr(nextcloud_apps, "versions", lambda: patched)

    return pin_apps


# --- the profile -----------------------------------------------------------------------------


def write_profile(tmp_path: Path, preset: str, nextcloud: str = "") -> Path:
    hosts = "hosts:\n  - {name: home, address: 192.168.1.20}\n  - {name: vps, address: 203.0.113.7}\n"
    smtp = "smtp: {host: smtp.example.org, username: forum}\n"
    path = tmp_path / "stack.yaml"
    path.write_text(f"preset: {preset}\ngroup: g\ndomain: example.org\nadmin_email: a@example.org\n{hosts}{smtp}{nextcloud}")
    return path


@pytest.mark.parametrize("preset", [p for p in preset_names() if load_preset(p).profile.get("nextcloud")])
def test_every_preset_with_nextcloud_gives_calendars_and_contacts(tmp_path, preset):
    profile = load_profile(write_profile(tmp_path, preset))
    assert {"calendar", "contacts"} <= set(profile.nextcloud.apps)
    if "calendar" in load_preset(preset).description:
        assert "calendar" in profile.nextcloud.apps, "the preset's description promises calendars"


def test_the_apps_are_the_profiles_to_choose(tmp_path):
    profile = load_profile(write_profile(tmp_path, "small-group", "nextcloud:\n  apps: [calendar, contacts, deck]\n"))
    assert profile.nextcloud.apps == ["calendar", "contacts", "deck"]
    assert load_profile(write_profile(tmp_path, "small-group", "nextcloud:\n  apps: []\n")).nextcloud.apps == []


@pytest.mark.parametrize(
    "nextcloud, expected",
    [
        ("nextcloud:\n  apps: [Calendar]\n", "nextcloud.apps[0]"),
        ("nextcloud:\n  apps: [calendar, calendar]\n", "'calendar' is listed twice"),
        ("nextcloud:\n  app_archives: {deck: deck.tar.gz}\n", "'deck' is not in nextcloud.apps"),
    ],
)
def test_bad_app_settings_are_one_line_naming_the_key(tmp_path, nextcloud, expected):
    with pytest.raises(ProfileError) as caught:
        load_profile(write_profile(tmp_path, "small-group", nextcloud))
    message = str(caught.value)
    assert expected in message and "stack.yaml" in message and "\n" not in message


def test_the_checks_expect_the_profiles_apps():
    from commonstack.checks.context import host_expectations

    profile = StackProfile.model_validate(
        {"group": "t", "domain": "example.org", "admin_email": "a@example.org",
         "hosts": [{"name": "s", "address": "203.0.113.7"}], "nextcloud": {"enabled": True, "apps": ["calendar"]}}
    )  # fmt: skip
    assert host_expectations(plan_host(profile, profile.hosts[0], {}))["nextcloud"]["apps"] == ["calendar"]


# --- the pins --------------------------------------------------------------------------------


def test_the_pinned_apps_suit_the_pinned_nextcloud():
    for app, pin in versions().nextcloud_apps.releases.items():
        assert pin.suits(MAJOR), f"{app} {pin.version} is pinned for Nextcloud {pin.min_major}-{pin.max_major}"
        assert pin.filename.startswith(f"{app}-") and pin.filename.endswith(".tar.gz")
    assert {"calendar", "contacts"} <= set(versions().nextcloud_apps.releases)


def test_an_app_unsuited_to_the_major_is_refused_in_one_line(pin):
    pin(calendar={"min_major": MAJOR + 1, "max_major": MAJOR + 2, "version": "7.0.0"})
    with pytest.raises(NextcloudSourceError) as caught:
        source.require_app_compatibility("calendar", MAJOR)
    message = str(caught.value)
    assert f"calendar 7.0.0 does not suit Nextcloud {MAJOR}" in message and "versions.yaml" in message
    assert "\n" not in message
    source.require_app_compatibility("deck", MAJOR)  # unpinned: the app store picks a suitable release


# --- a local archive, checked on the controller ----------------------------------------------


def test_a_pinned_archive_is_accepted(tmp_path, pin):
    archive = make_app_archive(tmp_path / "calendar-v6.0.2.tar.gz")
    pin(calendar=archive)
    checked = source.check_app_archive("calendar", archive, MAJOR)
    assert (checked.app, checked.version, checked.path, checked.sha256) == ("calendar", "6.0.2", archive, sha256(archive))


def test_an_archive_with_another_checksum_is_refused(tmp_path, pin):
    archive = make_app_archive(tmp_path / "calendar-v6.0.2.tar.gz")
    pin(calendar={"sha256": "0" * 64})
    with pytest.raises(NextcloudSourceError, match=r"nextcloud.app_archives.calendar: .* has sha256 .*, not the pinned 000000000000…"):
        source.check_app_archive("calendar", archive, MAJOR)


def test_an_archive_without_a_pinned_sha256_is_refused(tmp_path, pin):
    archive = make_app_archive(tmp_path / "calendar-v6.0.2.tar.gz")
    pin(calendar={"sha256": None})
    with pytest.raises(NextcloudSourceError, match="pins no sha256 for calendar 6.0.2"):
        source.check_app_archive("calendar", archive, MAJOR)


def test_an_archive_of_an_unpinned_app_or_a_missing_file_is_refused(tmp_path, pin):
    with pytest.raises(NextcloudSourceError, match="pins no deck release"):
        source.check_app_archive("deck", make_app_archive(tmp_path / "deck.tar.gz", "deck"), MAJOR)
    pin(calendar={"sha256": "0" * 64})
    with pytest.raises(NextcloudSourceError, match="no such file; download https://"):
        source.check_app_archive("calendar", tmp_path / "nowhere.tar.gz", MAJOR)


def _entry(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.type, entry.linkname, entry.size = kind, target, 1 if kind == tarfile.REGTYPE else 0
    return entry


@pytest.mark.parametrize(
    "extra, info, expected",
    [
        ([_entry("../evil.php")], None, "'../evil.php' lies outside the folder calendar/"),
        ([_entry("/etc/cron.d/evil")], None, "'/etc/cron.d/evil' lies outside"),
        ([_entry("contacts/lib.php")], None, "'contacts/lib.php' lies outside"),
        ([_entry("calendar/lib/../../x")], None, "lies outside"),
        ([_entry("calendar/link", tarfile.SYMTYPE, "/etc/passwd")], None, "'calendar/link' is a link"),
        ([_entry("calendar/hard", tarfile.LNKTYPE, "calendar/README.md")], None, "is a link or a special file"),
        ([], info_xml("calendar", "6.0.1"), "says calendar 6.0.1, not the pinned calendar 6.0.2"),
        ([], info_xml("contacts", "6.0.2"), "says contacts 6.0.2"),
        ([], info_xml("calendar", "6.0.2", MAJOR + 1, MAJOR + 2), f"declares Nextcloud {MAJOR + 1} to {MAJOR + 2}"),
        ([], info_xml("calendar", "6.0.2", None, MAJOR - 1), f"to {MAJOR - 1} in its appinfo/info.xml, not {MAJOR}"),
        ([], "<info><id>calendar", "is not XML"),
    ],
)
def test_an_archive_of_the_wrong_shape_is_refused_before_extraction(tmp_path, pin, extra, info, expected):
    archive = make_app_archive(tmp_path / "calendar-v6.0.2.tar.gz", info=info, extra=extra)
    pin(calendar=archive)  # the sha256 matches: the structure alone must refuse it
    with pytest.raises(NextcloudSourceError) as caught:
        source.check_app_archive("calendar", archive, MAJOR)
    assert expected in str(caught.value) and "nothing was extracted" in str(caught.value)


def test_an_archive_without_info_xml_or_not_a_tar_is_refused(tmp_path, pin):
    bare = tmp_path / "calendar-v6.0.2.tar.gz"
    with tarfile.open(bare, "w:gz") as archive:
        archive.addfile(_entry("calendar/README.md"), io.BytesIO(b"x"))
    pin(calendar=bare)
    with pytest.raises(NextcloudSourceError, match="holds no calendar/appinfo/info.xml"):
        source.check_app_archive("calendar", bare, MAJOR)
    bare.write_bytes(b"not a tar archive")
    pin(calendar=bare)
    with pytest.raises(NextcloudSourceError, match="not a readable tar archive"):
        source.check_app_archive("calendar", bare, MAJOR)


# --- where each app comes from (the preflight) -----------------------------------------------


class GroupHost(FakeHost):
    """The fake host of the tables, with the group folder the inventory gives a real host."""

    def __init__(self, folder: Path, *tables):
        super().__init__(*tables)
        self.data = {"group_folder": str(folder)}


def sources_of(tmp_path: Path, on_host: nextcloud_apps.AppsOnHost, store_problem: str = "", **nextcloud):
    profile = StackProfile.model_validate(
        {"group": "t", "domain": "example.org", "admin_email": "a@example.org",
         "hosts": [{"name": "s", "address": "203.0.113.7"}],
         "offline": nextcloud.pop("offline", False), "nextcloud": {"enabled": True, **nextcloud}}
    )  # fmt: skip
    store = versions().nextcloud_apps.store
    host = GroupHost(tmp_path, {"facts.DownloadProblem": {f"url={store}": store_problem}})
    with _as_current(host):
        return nextcloud_apps.app_sources(plan_host(profile, profile.hosts[0], {}), on_host), host


def test_online_apps_come_from_the_store_once_it_answers(tmp_path):
    sources, host = sources_of(tmp_path, nextcloud_apps.AppsOnHost())
    assert sources == {"calendar": None, "contacts": None}
    assert ("facts.DownloadProblem", f"url={versions().nextcloud_apps.store}") in host.read


def test_apps_already_there_need_no_source_and_no_store(tmp_path):
    there = nextcloud_apps.AppsOnHost(enabled={"calendar": "6.0.2"}, disabled={"contacts": "8.0.4"})
    sources, host = sources_of(tmp_path, there, offline=True)
    assert sources == {} and not host.read, "nothing to fetch: neither archives nor the store are needed"


def test_an_unreachable_store_is_refused_naming_the_archive_key(tmp_path):
    with pytest.raises(SourceUnavailable) as caught:
        sources_of(tmp_path, nextcloud_apps.AppsOnHost(), store_problem="Could not resolve host")
    message = str(caught.value)
    assert caught.value.layer == "nextcloud" and "fakehost cannot reach https://apps.nextcloud.com/" in message
    assert "set nextcloud.app_archives.calendar to a copy of calendar-v6.0.2.tar.gz" in message


def test_offline_without_archives_is_refused_naming_the_key(tmp_path):
    with pytest.raises(SourceUnavailable) as caught:
        sources_of(tmp_path, nextcloud_apps.AppsOnHost(), offline=True)
    assert "offline: true" in str(caught.value) and "set nextcloud.app_archives.calendar" in str(caught.value)


def test_offline_archives_are_checked_relative_to_the_group_folder(tmp_path, pin):
    calendar = make_app_archive(tmp_path / "apps" / "calendar-v6.0.2.tar.gz")
    contacts = make_app_archive(tmp_path / "apps" / "contacts-v8.0.4.tar.gz", "contacts", "8.0.4")
    pin(calendar=calendar, contacts=contacts)
    sources, host = sources_of(tmp_path, nextcloud_apps.AppsOnHost(), offline=True,
                               app_archives={"calendar": "apps/calendar-v6.0.2.tar.gz", "contacts": str(contacts)})  # fmt: skip
    assert {app: (a.path, a.version) for app, a in sources.items()} == {
        "calendar": (calendar, "6.0.2"), "contacts": (contacts, "8.0.4")
    }
    assert not host.read, "no store asked: every app has its archive"


def test_an_unsuited_pin_is_refused_even_for_an_app_already_there(tmp_path, pin):
    pin(contacts={"min_major": 1, "max_major": MAJOR - 1})
    with pytest.raises(NextcloudSourceError, match=f"contacts 8.0.4 does not suit Nextcloud {MAJOR}"):
        sources_of(tmp_path, nextcloud_apps.AppsOnHost(enabled={"calendar": "6.0.2", "contacts": "8.0.4"}))


def test_apps_that_cannot_be_listed_stop_the_deploy(tmp_path):
    with pytest.raises(NextcloudSourceError, match="Nextcloud's apps cannot be listed \\(Exception: boom\\)"):
        sources_of(tmp_path, nextcloud_apps.AppsOnHost(occ_problem="Exception: boom"))


# --- the host's unpack script, run here for real ----------------------------------------------


@pytest.fixture(scope="module")
def app_unpack(tmp_path_factory) -> Path:
    profile = StackProfile.model_validate(
        {"group": "t", "domain": "example.org", "admin_email": "a@example.org",
         "hosts": [{"name": "server", "address": "203.0.113.7"}], "nextcloud": {"enabled": True}}
    )  # fmt: skip
    plan = plan_host(profile, profile.hosts[0], {})
    script = next(f for f in plan.files if f.path == nextcloud_apps.APP_UNPACK)
    assert script.mode == "0755"
    path = tmp_path_factory.mktemp("sbin") / "commonstack-nextcloud-app-unpack"
    path.write_text(script.content)
    return path


def unpack(script: Path, archive: Path, digest: str, apps: Path, app: str = "calendar"):
    owner = pwd.getpwuid(os.getuid()).pw_name
    if owner != grp.getgrgid(os.getgid()).gr_name:
        pytest.skip("the script chowns to OWNER:OWNER; this user's primary group has another name")
    apps.mkdir(exist_ok=True)
    return subprocess.run(["sh", str(script), str(archive), digest, app, str(apps), owner], capture_output=True, text=True)


def test_a_pinned_app_is_unpacked_into_the_apps_folder(app_unpack, tmp_path):
    archive = make_app_archive(tmp_path / "calendar-v6.0.2.tar.gz")
    done = unpack(app_unpack, archive, sha256(archive), tmp_path / "apps")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "apps" / "calendar" / "appinfo" / "info.xml").is_file()
    assert sorted(p.name for p in (tmp_path / "apps").iterdir()) == ["calendar"], "no staging folder is left"


def test_the_host_refuses_another_checksum_before_extracting(app_unpack, tmp_path):
    archive = make_app_archive(tmp_path / "calendar-v6.0.2.tar.gz")
    done = unpack(app_unpack, archive, "0" * 64, tmp_path / "apps")
    assert done.returncode == 3 and "not the pinned" in done.stderr and "nothing was extracted" in done.stderr
    assert list((tmp_path / "apps").iterdir()) == []


@pytest.mark.parametrize("extra", [[_entry("contacts/x.php")], [_entry("calendar/link", tarfile.SYMTYPE, "/etc")],
                                   [_entry("calendar/../x.php")]])  # fmt: skip
def test_the_host_refuses_members_outside_the_app_or_links(app_unpack, tmp_path, extra):
    archive = make_app_archive(tmp_path / "calendar-v6.0.2.tar.gz", extra=extra)
    done = unpack(app_unpack, archive, sha256(archive), tmp_path / "apps")
    assert done.returncode == 5 and "nothing was extracted" in done.stderr, done.stderr
    assert list((tmp_path / "apps").iterdir()) == []
    assert not (tmp_path / "x.php").exists()


def test_an_app_already_there_is_never_replaced(app_unpack, tmp_path):
    (tmp_path / "apps" / "calendar").mkdir(parents=True)
    (tmp_path / "apps" / "calendar" / "mine.txt").write_text("mine")
    archive = make_app_archive(tmp_path / "calendar-v6.0.2.tar.gz")
    done = unpack(app_unpack, archive, sha256(archive), tmp_path / "apps")
    assert done.returncode == 6
    assert [p.name for p in (tmp_path / "apps" / "calendar").iterdir()] == ["mine.txt"]


# --- what the checks read -------------------------------------------------------------------

SETUP_CHECKS = (
    '{"network":{"OCA\\\\Settings\\\\SetupChecks\\\\InternetConnectivity":{"name":"Internet connectivity",'
    '"severity":"warning","description":"This server has no working internet connection.",'
    '"descriptionParameters":null,"linkToDoc":null}},'
    '"system":{"OCA\\\\Settings\\\\SetupChecks\\\\CronInfo":{"name":"Cron last run","severity":"error",'
    '"description":"Last background job execution ran {relativeTime}. Something seems wrong.",'
    '"descriptionParameters":{"relativeTime":{"type":"highlight","id":"relative-time","name":"3 days ago"}},'
    '"linkToDoc":"https://docs.nextcloud.com/server/32/go.php?to=admin-background-jobs"},'
    '"OCA\\\\Settings\\\\SetupChecks\\\\PhpModules":{"name":"PHP modules","severity":"success","description":null,'
    '"descriptionParameters":null,"linkToDoc":null}},"config":[]}'
)


def test_setup_checks_report_their_errors_with_hints_and_not_their_warnings():
    from commonstack.checks.nextcloud import setup_check_errors

    assert setup_check_errors("some notice\n" + SETUP_CHECKS) == [
        "Cron last run: Last background job execution ran 3 days ago. Something seems wrong. "
        "(see https://docs.nextcloud.com/server/32/go.php?to=admin-background-jobs)"
    ]
    assert setup_check_errors(SETUP_CHECKS.replace('"error"', '"success"')) == []
    for broken in ("", "An unhandled exception has been thrown:", "[]"):
        with pytest.raises(ValueError):
            setup_check_errors(broken)


def test_a_multistatus_gives_its_hrefs_decoded():
    from commonstack.checks.nextcloud import multistatus_hrefs

    body = (
        b'<?xml version="1.0"?><d:multistatus xmlns:d="DAV:" xmlns:cal="urn:ietf:params:xml:ns:caldav">'
        b"<d:response><d:href>/remote.php/dav/calendars/admin/</d:href></d:response>"
        b"<d:response><d:href>/remote.php/dav/calendars/admin/my%20calendar/</d:href></d:response></d:multistatus>"
    )
    assert multistatus_hrefs(body) == ["/remote.php/dav/calendars/admin/", "/remote.php/dav/calendars/admin/my calendar/"]
    assert multistatus_hrefs(b"<html>login</html>") == [] and multistatus_hrefs(b"not xml") == []
