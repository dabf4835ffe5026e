"""Backups without hosts: repository addresses, the hosts' SSH keys, what a snapshot may be restored
onto, the counts a restore is judged by, and the drill's copy of a group."""

from __future__ import annotations

import shutil
import stat
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from commonstack.backups.drill import drill_host_name, write_drill_group
from commonstack.backups.restore import compare_counts, restorable_layers
from commonstack.backups.snapshots import Snapshot, choose, refusal, restic_time
from commonstack.errors import CommonstackError, ProfileError
from commonstack.inventories.backup_keys import backup_key
from commonstack.inventories.groups import Group
from commonstack.plan import kit_version
from commonstack.stacks.layers import LAYERS, layer, saved_paths
from commonstack.stacks.loader import load_profile
from commonstack.stacks.paths import BACKUP_STAGING
from commonstack.stacks.repository import parse_repository
from commonstack.stacks.versions import versions
from commonstack.testhosts import TestHost

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


# --- repositories ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, kind, server, user, port, path",
    [
        ("sftp:restic@backup.example.net:/srv/restic/tenants", "sftp", "backup.example.net", "restic", 22, "/srv/restic/tenants"),
        ("sftp://u1@192.0.2.9:2222//srv/r", "sftp", "192.0.2.9", "u1", 2222, "/srv/r"),
        ("/mnt/usb/restic", "local", None, None, 22, "/mnt/usb/restic"),
        ("local:/mnt/usb/restic", "local", None, None, 22, "/mnt/usb/restic"),
        ("rest:https://user:pw@backup.example.net:8000/coop", "rest", None, None, 22, None),
    ],
)  # fmt: skip
def test_repository_addresses_are_understood(address, kind, server, user, port, path):
    repository = parse_repository(address)
    assert (repository.kind, repository.server, repository.user, repository.port, repository.path) == (
        kind, server, user, port, path)  # fmt: skip


@pytest.mark.parametrize("address", ["s3:bucket/x", "sftp:host-only", "mnt/usb", "rest:ftp://x", "/with space"])
def test_an_unknown_repository_is_one_clear_line(tmp_path, address):
    stack = tmp_path / "stack.yaml"
    stack.write_text(yaml.safe_dump({"preset": "chat", "group": "g", "domain": "g.example.org",
                                     "admin_email": "a@g.example.org", "hosts": [{"name": "vps", "address": "192.0.2.7"}],
                                     "backup": {"enabled": True, "repository": address}}))  # fmt: skip
    with pytest.raises(ProfileError) as error:
        load_profile(stack)
    message = str(error.value)
    assert "backup.repository" in message and "sftp:USER@HOST:/PATH" in message and "\n" not in message


# --- the hosts' keys ---------------------------------------------------------------------------


def test_each_host_has_its_own_key_and_it_never_changes(tmp_path):
    key = backup_key("seed", "tenants", "vps")
    assert key == backup_key("seed", "tenants", "vps"), "a key that changed would make every deploy change it"
    others = {backup_key("seed", "tenants", "pi").public, backup_key("other", "tenants", "vps").public,
              backup_key("seed", "coop", "vps").public}  # fmt: skip
    assert key.public not in others and len(others) == 3
    assert key.public.startswith("ssh-ed25519 ") and key.public.endswith(" commonstack-backup-tenants-vps")
    assert "private" not in repr(key) or "hidden" in repr(key)
    assert key.private not in repr(key)
    if shutil.which("ssh-keygen"):  # OpenSSH reads the file and derives the same public key
        path = tmp_path / "key"
        path.write_text(key.private)
        path.chmod(0o600)
        derived = subprocess.run(["ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True, check=True)
        assert derived.stdout.split()[:2] == key.public.split()[:2]


# --- what the registry declares ------------------------------------------------------------------


def test_saved_paths_leave_out_those_inside_another():
    paths = saved_paths(("synapse", "backup"))
    assert "/etc/matrix-synapse" in paths and "/etc/matrix-synapse/signing.key" not in paths
    assert "/var/lib/matrix-synapse/media/local_content" in paths
    assert not [p for p in paths if "remote_" in p or "url_cache" in p]


def test_no_exclusion_drops_the_dumps_or_restored_data():
    for item in LAYERS:
        for pattern in item.backup.exclude if item.backup else ():
            assert not BACKUP_STAGING.startswith(pattern.rstrip("*")), (item.name, pattern)
            for other in LAYERS:
                for path in other.backup.paths if other.backup else ():
                    assert path != pattern and not path.startswith(pattern.rstrip("/") + "/"), (pattern, path)


def test_every_database_of_a_layer_is_dumped_by_it():
    for item in LAYERS:
        dumped = {d.database for d in item.backup.dumps} if item.backup else set()
        assert dumped == {d.name for d in item.databases}, item.name
    assert layer("synapse").backup.dumps[0].exclude_table_data == ("e2e_one_time_keys_json",)


# --- snapshots -------------------------------------------------------------------------------------


def snapshot(kind="routine", minutes_ago=60, **manifest) -> Snapshot:
    document = {"format": 1, "kit": kit_version(), "layers": ["caddy", "synapse"],
                "debian": {"codename": "bookworm", "arch": "amd64"},
                "versions": {"synapse": {"version": versions().synapse.version, "schema": 90}}}  # fmt: skip
    document.update(manifest)
    identity = f"{minutes_ago:04d}{kind}".encode().hex().ljust(64, "0")[:64]
    return Snapshot(identity, NOW - timedelta(minutes=minutes_ago), "vps", ("commonstack", kind), document, 10, 2)


def test_restic_times_are_read_with_their_nanoseconds():
    assert restic_time("2026-11-30T10:41:57.011938269Z") == datetime(2026, 11, 30, 10, 41, 57, 11938, timezone.utc)


def test_the_latest_routine_snapshot_is_chosen_unless_one_is_named():
    older, newer, safety = snapshot(minutes_ago=120), snapshot(minutes_ago=60), snapshot("pre-restore", 5)
    found = [older, newer, safety]
    assert choose(found, None, "vps", "g") == newer, "a pre-restore snapshot is never the latest to restore"
    assert choose(found, older.id[:8], "vps", "g") == older
    with pytest.raises(CommonstackError, match=r"--snapshot deadbeef is no snapshot of host vps .* `commonstack backups g`"):
        choose(found, "deadbeef", "vps", "g")
    with pytest.raises(CommonstackError, match="has no snapshot in the repository yet"):
        choose([], None, "vps", "g")


def test_what_the_kit_can_restore():
    assert refusal(snapshot(), "bookworm") is None
    assert refusal(snapshot(), "trixie") is None, "a bookworm snapshot restores onto Debian 13"
    newer = refusal(snapshot(versions={"synapse": {"version": "99.0.0", "schema": 999}}), "bookworm")
    assert "holds data of Synapse 99.0.0 (this kit installs" in newer and "Nothing was changed" in newer
    cloud = refusal(snapshot(versions={"nextcloud": {"versionstring": "40.0.1"}}), "bookworm")
    assert "Nextcloud 40.0.1" in cloud
    older = refusal(snapshot(versions={"synapse": {"version": "1.100.0", "schema": 80}}), "bookworm")
    assert older is None, "older data is upgraded by the newer code (Synapse migrates its schema)"
    assert "comes from Debian trixie" in refusal(snapshot(debian={"codename": "trixie"}), "bookworm")
    assert "made by commonstack 99.0" in refusal(snapshot(kit="99.0"), "bookworm")
    assert "format" in refusal(snapshot(format=2), "bookworm")


def test_what_a_restore_puts_back():
    found = snapshot(layers=["postgres", "caddy", "synapse", "coturn", "backup"])
    host_layers = ("base", "postgres", "caddy", "synapse", "coturn", "backup")
    assert restorable_layers(found, host_layers, ()) == ["caddy", "synapse"]
    assert restorable_layers(found, host_layers, ("synapse",)) == ["synapse"]
    with pytest.raises(CommonstackError, match=r"--only coturn: nothing of it can be restored .*keeps what the deploy renders"):
        restorable_layers(found, host_layers, ("coturn",))
    with pytest.raises(CommonstackError, match=r"--only nextcloud: .*is not in the snapshot"):
        restorable_layers(found, host_layers, ("nextcloud",))
    with pytest.raises(CommonstackError, match="holds synapse, which the profile does not place on host"):
        restorable_layers(found, ("base", "postgres", "caddy"), ())


def test_a_restore_is_judged_by_the_counts_of_the_backup():
    found = snapshot(databases={"synapse": {"counts": {"users": 3, "events": 40}}},
                     files={"/var/lib/matrix-synapse/media/local_content": 2})  # fmt: skip
    same = {"databases": {"synapse": {"users": 3, "events": 41}}, "files": {"/var/lib/matrix-synapse/media/local_content": 2}}
    lines, problems = compare_counts(found, same)
    assert not problems and "synapse.users 3 (3 at the backup)" in lines
    fewer = {"databases": {"synapse": {"users": 3, "events": 12}}, "files": {"/var/lib/matrix-synapse/media/local_content": 0}}
    _, problems = compare_counts(found, fewer)
    assert problems == ["synapse.events has 12 rows, the backup counted 40",
                        "/var/lib/matrix-synapse/media/local_content is empty, it held 2 files at the backup"]  # fmt: skip


# --- the drill -------------------------------------------------------------------------------------


def test_the_drill_copies_the_group_onto_the_throwaway_host(tmp_path):
    group = Group("tenants", tmp_path / "inventories")
    group.folder.mkdir(parents=True)
    (group.folder / "nextcloud-32.0.2.tar.bz2").write_bytes(b"")
    group.stack_file.write_text(yaml.safe_dump({
        "preset": "small-group", "group": "tenants", "domain": "tenants.example.org", "admin_email": "a@tenants.example.org",
        "hosts": [{"name": "vps", "address": "203.0.113.7"}],
        "nextcloud": {"archive": "nextcloud-32.0.2.tar.bz2"},
        "tls": {"mode": "acme", "email": "tls@tenants.example.org"},
        "backup": {"enabled": True, "repository": "sftp:restic@198.51.100.4:/srv/restic/tenants"},
    }))  # fmt: skip
    group.secrets_file.write_text("restic_password: x\n")
    group.secrets_file.chmod(0o600)
    group.known_hosts.write_text("203.0.113.7 ssh-ed25519 AAAAhost\n198.51.100.4 ssh-ed25519 AAAArepository\n")
    test = TestHost(name="drill-1", address="10.231.9.2", key_path=Path("/k"), suite="bookworm", arch="amd64",
                    host_key="ssh-ed25519 AAAAtest")  # fmt: skip
    drilled = write_drill_group(group, group.load(), "vps", test, tmp_path / "drill", 2048)
    profile = drilled.load()
    assert profile.group == "tenants", "the same group: the same SSH key for the repository"
    assert profile.hosts[0].address == "10.231.9.2" and profile.hosts[0].name == "vps"
    assert profile.tls.mode == "internal" and profile.backup.repository == "sftp:restic@198.51.100.4:/srv/restic/tenants"
    assert profile.nextcloud.archive == (group.folder / "nextcloud-32.0.2.tar.bz2").resolve()
    assert stat.S_IMODE(drilled.secrets_file.stat().st_mode) == 0o600
    pinned = drilled.known_hosts.read_text()
    assert "AAAArepository" in pinned and "AAAAhost" not in pinned and "10.231.9.2" in pinned
    assert drill_host_name("tenants", "vps") != drill_host_name("tenants", "pi")
