"""The Nextcloud release's provenance: the pinned key, local archives, and the host's unpack script.

The unpack script runs here for real (sh, sha256sum, gpgv, tar) against archives signed by a
THROWAWAY key generated for each test session — a test fixture, never Nextcloud's key; the
real key is only parsed and compared with its pinned fingerprint. No network is used.
"""

from __future__ import annotations

import dataclasses
import grp
import hashlib
import os
import pwd
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from commonstack.plan import plan_host
from commonstack.stacks.versions import versions
from commonstack.deploys import nextcloud_source as source
from commonstack.deploys.nextcloud_source import NextcloudSourceError
from commonstack.stacks.model import StackProfile

GPG = shutil.which("gpg")
GPGV = shutil.which("gpgv")
needs_gnupg = pytest.mark.skipif(not (GPG and GPGV), reason="needs gpg and gpgv (packages gnupg, gpgv)")


# --- the pinned key --------------------------------------------------------------------------


def test_the_shipped_key_is_the_pinned_one():
    release = source.pinned_release()
    keyring = source.release_keyring(release)
    assert source.primary_fingerprint(keyring) == release.fingerprint == "28806A878AE423A28372792ED75899B9A724937A"


@needs_gnupg
def test_dearmor_matches_gpg_and_the_self_signatures_verify(tmp_path):
    release = source.pinned_release()
    home = ["--homedir", str(tmp_path), "--batch"]
    dearmored = subprocess.run([GPG, *home, "--dearmor"], input=release.key_file.read_bytes(), capture_output=True)
    assert source.dearmor(release.key_file.read_text()) == dearmored.stdout
    subprocess.run([GPG, *home, "--import", str(release.key_file)], capture_output=True, check=True)
    listing = subprocess.run([GPG, *home, "--with-colons", "--check-signatures"], capture_output=True, text=True)
    signatures = [line for line in listing.stdout.splitlines() if line.startswith("sig:")]
    assert signatures and all(line.startswith("sig:!") for line in signatures), listing.stdout


def test_a_damaged_or_swapped_key_file_is_refused(tmp_path):
    release = source.pinned_release()
    text = release.key_file.read_text()
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("mQINB"))
    damaged = tmp_path / "damaged.asc"
    damaged.write_text("\n".join(lines[:index] + ["mQINC" + lines[index][5:]] + lines[index + 1 :]) + "\n")
    with pytest.raises(NextcloudSourceError, match="CRC24"):
        source.release_keyring(dataclasses.replace(release, key_file=damaged))
    with pytest.raises(NextcloudSourceError, match="not the pinned 0000"):
        source.release_keyring(dataclasses.replace(release, fingerprint="0000" + release.fingerprint[4:]))


def test_the_pinned_release_is_complete():
    release = source.pinned_release()
    assert release.url.endswith(f"/nextcloud-{release.version}.tar.bz2")
    assert release.sha256 and len(release.sha256) == 64
    assert release.signature_url == release.url + ".asc"


def test_a_nextcloud_too_new_for_the_hosts_php_is_refused():
    release = source.pinned_release()
    for codename, debian in versions().debian.items():
        source.require_php_compatibility(release, codename)  # the pinned one fits every release
        too_new = dataclasses.replace(release, version=f"{debian.nextcloud_max_major + 1}.0.0")
        with pytest.raises(NextcloudSourceError) as refused:
            source.require_php_compatibility(too_new, codename)
        assert f"PHP {debian.php}" in str(refused.value) and str(debian.nextcloud_max_major) in str(refused.value)


def test_the_unreachable_message_names_the_url_and_the_offline_way():
    release = source.pinned_release()
    message = source.unreachable_message(release, "home", "curl: (6) Could not resolve host:\n download.nextcloud.com")
    assert "\n" not in message and len(f"nextcloud: {message}") <= 300  # the runner keeps 300
    assert release.url in message and "nextcloud.archive" in message and ".asc" in message
    assert len("nextcloud: " + source.unreachable_message(release, "a-long-host-name", "x" * 500)) <= 300


# --- local archives --------------------------------------------------------------------------


def make_release_archive(folder: Path, name: str = "nextcloud-99.0.0.tar.bz2", with_code: bool = True) -> Path:
    tree = folder / "tree" / "nextcloud"
    tree.mkdir(parents=True)
    (tree / ("version.php" if with_code else "README")).write_text("<?php $OC_VersionString = '99.0.0';\n")
    (tree / "index.php").write_text("<?php echo 'fixture';\n")
    archive = folder / name
    with tarfile.open(archive, "w:bz2") as tar:
        tar.add(tree, arcname="nextcloud")
    return archive


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_local_archive_with_the_pinned_sha256_and_a_signature_is_accepted(tmp_path):
    archive = make_release_archive(tmp_path)
    (tmp_path / (archive.name + ".asc")).write_text("signature (checked on the host)\n")
    release = dataclasses.replace(source.pinned_release(), sha256=sha256(archive))
    checked = source.check_local_archive(archive, release)
    assert (checked.path, checked.sha256) == (archive, sha256(archive))
    assert checked.signature == tmp_path / (archive.name + ".asc")


def test_a_local_archive_with_another_checksum_is_refused_before_anything(tmp_path):
    archive = make_release_archive(tmp_path)
    (tmp_path / (archive.name + ".asc")).write_text("sig\n")
    release = source.pinned_release()
    with pytest.raises(NextcloudSourceError) as refused:
        source.check_local_archive(archive, release)
    message = str(refused.value)
    assert f"not the published {release.sha256[:12]}…" in message and "nothing was unpacked" in message
    assert len(str(refused.value)) - len(str(archive)) <= 220, "the runner keeps 300 characters"


def test_a_local_archive_needs_its_signature(tmp_path):
    archive = make_release_archive(tmp_path)
    release = dataclasses.replace(source.pinned_release(), sha256=sha256(archive))
    with pytest.raises(NextcloudSourceError, match=r"no signature .*\.asc next to the archive"):
        source.check_local_archive(archive, release)


def test_a_missing_archive_says_where_it_was_looked_for(tmp_path):
    with pytest.raises(NextcloudSourceError, match=f"{tmp_path}/nope.tar.bz2: no such file"):
        source.check_local_archive(tmp_path / "nope.tar.bz2", source.pinned_release())


def test_the_sha256_file_next_to_an_archive_is_used_and_must_agree(tmp_path):
    archive = make_release_archive(tmp_path)
    (tmp_path / (archive.name + ".asc")).write_text("sig\n")
    unpinned = dataclasses.replace(source.pinned_release(), sha256=None)
    with pytest.raises(NextcloudSourceError, match="no sha256 to check"):
        source.check_local_archive(archive, unpinned)
    checksum = tmp_path / (archive.name + ".sha256")
    checksum.write_text(f"{sha256(archive)}  {archive.name}\n")
    assert source.check_local_archive(archive, unpinned).sha256 == sha256(archive)
    checksum.write_text(f"{'0' * 64}  {archive.name}\n")
    with pytest.raises(NextcloudSourceError, match="its .sha256 file says 000000000000…"):
        source.check_local_archive(archive, unpinned)


def test_relative_archive_paths_start_at_the_group_folder(tmp_path):
    assert source.resolve_archive(Path("nc.tar.bz2"), tmp_path) == tmp_path / "nc.tar.bz2"
    assert source.resolve_archive(Path("/srv/nc.tar.bz2"), tmp_path) == Path("/srv/nc.tar.bz2")


# --- the unpack script on the host, with a throwaway key --------------------------------------


@pytest.fixture(scope="module")
def unpack_script(tmp_path_factory) -> Path:
    profile = StackProfile.model_validate(
        {"group": "t", "domain": "example.org", "admin_email": "a@example.org",
         "hosts": [{"name": "server", "address": "203.0.113.7"}], "nextcloud": {"enabled": True}}
    )  # fmt: skip
    plan = plan_host(profile, profile.hosts[0], {})
    script = next(f for f in plan.files if f.path == "/usr/local/sbin/commonstack-nextcloud-unpack")
    assert script.mode == "0755"
    path = tmp_path_factory.mktemp("sbin") / "commonstack-nextcloud-unpack"
    path.write_text(script.content)
    return path


class ThrowawayKeys:
    """A GnuPG home with keys made for these tests only (never Nextcloud's)."""

    def __init__(self, home: Path):
        self.home = home
        home.chmod(0o700)

    def gpg(self, *arguments: str, **kwargs) -> subprocess.CompletedProcess[str]:
        return subprocess.run([GPG, "--homedir", str(self.home), "--batch", *arguments],
                              capture_output=True, text=True, check=True, **kwargs)  # fmt: skip

    def new_key(self, uid: str) -> str:
        self.gpg("--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
        listing = self.gpg("--with-colons", "--list-keys", uid).stdout.splitlines()
        return next(line.split(":")[9] for line in listing if line.startswith("fpr:"))

    def sign(self, fingerprint: str, archive: Path) -> None:
        self.gpg("--yes", "--local-user", fingerprint, "--armor", "--detach-sign", "--output", f"{archive}.asc",
                 str(archive))  # fmt: skip

    def keyring(self, path: Path, *fingerprints: str) -> Path:
        path.write_bytes(subprocess.run([GPG, "--homedir", str(self.home), "--batch", "--export", *fingerprints],
                                        capture_output=True, check=True).stdout)  # fmt: skip
        return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict:
    if not (GPG and GPGV):
        pytest.skip("needs gpg and gpgv (packages gnupg, gpgv)")
    throwaway = ThrowawayKeys(tmp_path_factory.mktemp("gnupg-fixture"))
    pinned = throwaway.new_key("commonstack test fixture: pinned <pinned@commonstack.invalid>")
    other = throwaway.new_key("commonstack test fixture: other <other@commonstack.invalid>")
    return {"gpg": throwaway, "pinned": pinned, "other": other}


def unpack(script: Path, archive: Path, digest: str, keyring: Path, fingerprint: str, target: Path):
    owner = pwd.getpwuid(os.getuid()).pw_name
    if owner != grp.getgrgid(os.getgid()).gr_name:
        pytest.skip("the script chowns to OWNER:OWNER; this user's primary group has another name")
    return subprocess.run(["sh", str(script), str(archive), digest, str(keyring), fingerprint, str(target), owner],
                          capture_output=True, text=True)  # fmt: skip


def unpack_signed(script: Path, keys: dict, signed: dict, keyring: Path | None = None):
    archive = signed["archive"]
    return unpack(script, archive, sha256(archive), keyring or signed["keyring"], keys["pinned"], signed["target"])


@pytest.fixture
def signed(tmp_path, keys) -> dict:
    archive = make_release_archive(tmp_path)
    keys["gpg"].sign(keys["pinned"], archive)
    keyring = keys["gpg"].keyring(tmp_path / "pinned.gpg", keys["pinned"])
    (tmp_path / "www").mkdir()
    return {"archive": archive, "keyring": keyring, "target": tmp_path / "www" / "nextcloud"}


def leftovers(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir())


def test_a_verified_release_is_unpacked(unpack_script, keys, signed):
    done = unpack_signed(unpack_script, keys, signed)
    assert done.returncode == 0, done.stderr
    assert (signed["target"] / "version.php").is_file() and (signed["target"] / "index.php").is_file()
    assert leftovers(signed["target"]) == ["nextcloud"], "the staging folder is removed"


def test_a_wrong_checksum_is_refused_before_extraction(unpack_script, keys, signed):
    done = unpack(unpack_script, signed["archive"], "0" * 64, signed["keyring"], keys["pinned"], signed["target"])
    assert done.returncode == 3 and "its sha256 is" in done.stderr and "nothing was unpacked" in done.stderr
    assert leftovers(signed["target"]) == []


def test_a_tampered_archive_is_refused_even_with_a_matching_checksum(unpack_script, keys, signed):
    archive = signed["archive"]
    archive.write_bytes(archive.read_bytes() + b"\0")  # what an attacker who also swaps the checksum sends
    done = unpack(unpack_script, archive, sha256(archive), signed["keyring"], keys["pinned"], signed["target"])
    assert done.returncode == 4 and "signature does not verify" in done.stderr
    assert leftovers(signed["target"]) == []


def test_a_signature_by_another_key_is_refused(unpack_script, keys, signed):
    keys["gpg"].sign(keys["other"], signed["archive"])  # a valid signature, by a key nobody pinned
    done = unpack_signed(unpack_script, keys, signed)
    assert done.returncode == 4, done.stderr
    both = keys["gpg"].keyring(signed["keyring"].with_name("both.gpg"), keys["pinned"], keys["other"])
    done = unpack_signed(unpack_script, keys, signed, keyring=both)
    assert done.returncode == 4 and f"not signed by key {keys['pinned']}" in done.stderr
    assert leftovers(signed["target"]) == []


def test_an_existing_release_is_never_replaced(unpack_script, keys, signed):
    signed["target"].mkdir()
    (signed["target"] / "config.php").write_text("mine")
    done = unpack_signed(unpack_script, keys, signed)
    assert done.returncode == 6
    assert sorted(p.name for p in signed["target"].iterdir()) == ["config.php"]


def test_an_archive_without_nextcloud_in_it_is_refused(unpack_script, keys, tmp_path):
    archive = make_release_archive(tmp_path / "odd", with_code=False)
    keys["gpg"].sign(keys["pinned"], archive)
    keyring = keys["gpg"].keyring(tmp_path / "k.gpg", keys["pinned"])
    (tmp_path / "www").mkdir()
    done = unpack(unpack_script, archive, sha256(archive), keyring, keys["pinned"], tmp_path / "www" / "nextcloud")
    assert done.returncode == 5 and leftovers(tmp_path / "www" / "nextcloud") == []
