"""The Nextcloud release's provenance: the pinned key, local archives, and the host's unpack script.

The unpack script runs here for real (sh, sha256sum, gpgv, tar) against archives signed by a
THROWAWAY key generated for each test session — a test fixture, never Nextcloud's key; the
real key is only parsed and compared with its pinned fingerprint. No network is used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from commonstack.errors import CommonstackError
from commonstack.stacks.versions import versions
from commonstack.deploys import nextcloud_source as source
from commonstack.deploys.nextcloud_source import NextcloudSourceError

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
    unpinned = dataclasses.replace(source.pinned_release(), sha256=None)
    archive = make_release_archive(tmp_path, name=unpinned.filename)
    (tmp_path / (archive.name + ".asc")).write_text("sig\n")
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


def test_a_folder_of_releases_gives_each_release_under_its_published_name(tmp_path):
    (tmp_path / "releases").mkdir()
    release = source.pinned_release("32.0.15")
    assert source.resolve_archive(Path("releases"), tmp_path, release) == tmp_path / "releases" / release.filename


def test_an_unhashed_release_is_only_taken_from_a_copy_under_its_own_name(tmp_path):
    """Without a pinned sha256 the copy's own .sha256 vouches for it: another release's copy must
    not pass as this one."""
    release = source.pinned_release("33.0.9")
    assert release.sha256 is None
    archive = make_release_archive(tmp_path, name="nextcloud-32.0.2.tar.bz2")
    (tmp_path / (archive.name + ".asc")).write_text("sig\n")
    (tmp_path / (archive.name + ".sha256")).write_text(f"{sha256(archive)}  {archive.name}\n")
    with pytest.raises(NextcloudSourceError, match="is not named nextcloud-33.0.9.tar.bz2"):
        source.check_local_archive(archive, release)


def test_only_known_releases_are_installed_and_each_suits_its_php(monkeypatch):
    with pytest.raises(CommonstackError, match="Nextcloud 31.0.0 is not a release this kit knows"):
        source.pinned_release("31.0.0")
    for codename in versions().debian:  # every known release runs on every supported Debian
        for version in versions().nextcloud.known:
            source.require_php_compatibility(source.pinned_release(version), codename)
    # A release whose PHP range starts above Debian 12's 8.2 is refused there.
    pins = versions().nextcloud
    too_new = pins.releases["33.0.9"].model_copy(update={"php_min": "8.3"})
    patched = versions().model_copy(
        update={"nextcloud": pins.model_copy(update={"releases": {**pins.releases, "33.0.9": too_new}})}
    )
    monkeypatch.setattr(source, "versions", lambda: patched)
    with pytest.raises(NextcloudSourceError, match="supports PHP 8.3 to 8.5, and Debian bookworm has PHP 8.2"):
        source.require_php_compatibility(source.pinned_release("33.0.9"), "bookworm")
