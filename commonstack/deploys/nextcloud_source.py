"""Where the Nextcloud release comes from, and what it must prove before anything is unpacked.

Pure Python (no pyinfra): the deploy (deploys/nextcloud.py) calls these at plan time, on the
controller, so that a wrong source fails before any host is changed. The host itself checks
the release again (sha256 and GPG signature) right before unpacking it:
templates/nextcloud/usr/local/sbin/commonstack-nextcloud-unpack.j2.

Two sources, one verification:

- the pinned upstream tarball (versions.yaml ``nextcloud.url``), downloaded by the host with its
  ``.asc`` next to it; the deploy first checks that the host can reach it;
- a local copy named in the profile (``nextcloud.archive``, absolute or relative to the group's
  folder; or a folder holding releases under their published names, which upgrades need), with
  its ``.asc`` (and optionally its ``.sha256``) next to it, copied to the host.

Either way the file must have the pinned sha256 and a valid signature by the pinned key
(``nextcloud.gpg_fingerprint``; the key itself ships in ``stacks/keys/nextcloud.asc``).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from commonstack.errors import CommonstackError
from commonstack.stacks.reading import ReadError, read_text
from commonstack.stacks.version_numbers import numeric
from commonstack.stacks.versions import VERSIONS_FILE, versions

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class NextcloudSourceError(CommonstackError):
    """The Nextcloud release cannot be used: unreachable, damaged, unsigned, or unsuited to the host."""


@dataclass(frozen=True)
class NextcloudRelease:
    """The release this version of the kit installs (versions.yaml ``nextcloud``)."""

    version: str
    url: str
    sha256: str | None
    fingerprint: str
    key_file: Path

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def signature_url(self) -> str:
        return self.url + ".asc"

    @property
    def checksum_url(self) -> str:
        return self.url + ".sha256"


def pinned_release(version: str | None = None) -> NextcloudRelease:
    """A release versions.yaml knows (default: the current one)."""
    pinned = versions().nextcloud
    version = version or pinned.current
    pinned.require_known(version, "Nextcloud")
    return NextcloudRelease(
        version=version,
        url=pinned.url_of(version),
        sha256=pinned.releases[version].sha256,
        fingerprint=pinned.gpg_fingerprint.replace(" ", "").upper(),
        key_file=pinned.key_file,
    )


def require_php_compatibility(release: NextcloudRelease, codename: str) -> None:
    """Nextcloud's major must run on the host's PHP: the release's supported PHP versions, and
    versions.yaml's ``nextcloud_max_major`` for the Debian release."""
    debian = versions().debian[codename]
    if release.major > debian.nextcloud_max_major:
        raise NextcloudSourceError(
            f"Nextcloud {release.version} does not run on Debian {codename}'s PHP {debian.php} "
            f"(it carries Nextcloud {debian.nextcloud_max_major} at most): pin an older Nextcloud in "
            f"{VERSIONS_FILE} or move the group to a newer Debian release"
        )
    known = versions().nextcloud.releases.get(release.version)
    if known and not numeric(known.php_min) <= numeric(debian.php) <= numeric(known.php_max):
        raise NextcloudSourceError(
            f"Nextcloud {release.version} supports PHP {known.php_min} to {known.php_max}, and Debian "
            f"{codename} has PHP {debian.php}: choose another Nextcloud release or Debian release"
        )


# --- the pinned key --------------------------------------------------------------------------


def dearmor(text: str) -> bytes:
    """The binary OpenPGP data of an ASCII-armored block (its CRC24 checked), as `gpg --dearmor`."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("-----BEGIN PGP "))
        end = next(i for i, line in enumerate(lines) if i > start and line.startswith("-----END PGP "))
    except StopIteration:
        raise NextcloudSourceError("no ASCII-armored OpenPGP block found") from None
    body = lines[start + 1 : end]
    blank = next((i for i, line in enumerate(body) if not line.strip()), -1)  # headers end at a blank line
    body = [line.strip() for line in body[blank + 1 :] if line.strip()]
    checksum = None
    if body and body[-1].startswith("="):
        checksum = body.pop()[1:]
    data = base64.b64decode("".join(body), validate=True)
    if checksum is not None and base64.b64decode(checksum) != _crc24(data).to_bytes(3, "big"):
        raise NextcloudSourceError("the armored key is damaged (CRC24 mismatch)")
    return data


def _crc24(data: bytes) -> int:
    """RFC 4880, 6.1."""
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def _packets(data: bytes):
    """(tag, body) of each OpenPGP packet (RFC 4880, 4.2: old and new packet formats)."""
    position = 0
    while position < len(data):
        header = data[position]
        if not header & 0x80:
            raise NextcloudSourceError("not OpenPGP data")
        if header & 0x40:  # new format
            tag = header & 0x3F
            first = data[position + 1]
            if first < 192:
                length, position = first, position + 2
            elif first < 224:
                length, position = ((first - 192) << 8) + data[position + 2] + 192, position + 3
            elif first == 255:
                length, position = int.from_bytes(data[position + 2 : position + 6], "big"), position + 6
            else:
                raise NextcloudSourceError("partial-length packets are not expected in a public key")
        else:  # old format
            tag = (header >> 2) & 0x0F
            size = {0: 1, 1: 2, 2: 4}.get(header & 0x03)
            if size is None:
                raise NextcloudSourceError("indeterminate-length packets are not expected in a public key")
            length = int.from_bytes(data[position + 1 : position + 1 + size], "big")
            position += 1 + size
        yield tag, data[position : position + length]
        position += length


def primary_fingerprint(keyring: bytes) -> str:
    """The v4 fingerprint of the first public key in binary OpenPGP data (RFC 4880, 12.2)."""
    for tag, body in _packets(keyring):
        if tag == 6:
            if body[0] != 4:
                raise NextcloudSourceError(f"unsupported OpenPGP key version {body[0]}")
            return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()
    raise NextcloudSourceError("no public key in the keyring")


def release_keyring(release: NextcloudRelease) -> bytes:
    """The pinned key as a binary keyring for gpgv, refused unless its fingerprint is the pinned one."""
    try:
        text = release.key_file.read_text()
    except OSError as exc:
        raise NextcloudSourceError(f"{release.key_file}: cannot read the pinned signing key ({exc.strerror})") from None
    keyring = dearmor(text)
    found = primary_fingerprint(keyring)
    if found != release.fingerprint:
        raise NextcloudSourceError(
            f"{release.key_file} holds key {found}, not the pinned {release.fingerprint}: "
            "the key file was replaced; restore it from the kit"
        )
    return keyring


# --- a local copy ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalArchive:
    """A local copy of the release whose sha256 matched; its signature is checked on the host."""

    path: Path
    signature: Path
    sha256: str


def resolve_archive(archive: Path, group_folder: Path | None, release: NextcloudRelease | None = None) -> Path:
    """`nextcloud.archive` as written in the profile: absolute, or relative to the group's folder;
    a folder holds the releases under their own names (what an upgrade needs: several releases)."""
    archive = archive.expanduser()
    if not archive.is_absolute() and group_folder is not None:
        archive = group_folder / archive
    if release is not None and archive.is_dir():
        return archive / release.filename
    return archive


def file_sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256_of(path.resolve(), stat.st_size, stat.st_mtime_ns)


@cache
def _sha256_of(path: Path, size: int, mtime_ns: int) -> str:
    """Hashing 260 MB takes a second: once per file version and process (preflight, then deploy)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def published_sha256(checksum_file: Path) -> str | None:
    """The hash in a `.sha256` file (`HASH  NAME`), None when there is no such file."""
    if not checksum_file.exists():
        return None
    try:  # bounded: a FIFO or a huge file in its place is refused, not read
        words = read_text(checksum_file, limit=4096).split()
    except ReadError as exc:
        raise NextcloudSourceError(f"{checksum_file}: {exc.message}") from None
    if not words or not _HEX64.match(words[0].lower()):
        raise NextcloudSourceError(f"{checksum_file}: not a sha256 checksum file")
    return words[0].lower()


def check_local_archive(path: Path, release: NextcloudRelease) -> LocalArchive:
    """Refuse (before anything is copied or unpacked) a local copy that is not the pinned release."""
    where = "nextcloud.archive"
    if not path.is_file():
        raise NextcloudSourceError(
            f"{where}: {path}: no such file; download {release.url} and {release.signature_url} "
            "to that place (paths are relative to the group's folder)"
        )
    signature = path.with_name(path.name + ".asc")
    if not signature.is_file():
        raise NextcloudSourceError(
            f"{where}: no signature {signature} next to the archive; download {release.signature_url} "
            "(the release is only installed when its GPG signature verifies)"
        )
    if release.sha256 is None and path.name != release.filename:
        raise NextcloudSourceError(
            f"{where}: {path} is not named {release.filename}, and versions.yaml pins no sha256 for "
            f"Nextcloud {release.version}: name the copy as published (or point {where} at a folder of releases)"
        )
    sidecar = published_sha256(path.with_name(path.name + ".sha256"))
    expected = release.sha256 or sidecar
    if expected is None:
        raise NextcloudSourceError(
            f"{where}: no sha256 to check {path} against: versions.yaml pins none for Nextcloud "
            f"{release.version}; put {release.checksum_url} next to the archive"
        )
    actual = file_sha256(path)
    # Short enough to survive the runner's 300 characters, with a long path in it.
    if sidecar is not None and sidecar != actual:
        raise NextcloudSourceError(
            f"{where}: {path} has sha256 {actual[:12]}…, its .sha256 file says {sidecar[:12]}…: "
            "damaged or incomplete, download it again; nothing was unpacked"
        )
    if actual != expected:
        raise NextcloudSourceError(
            f"{where}: {path} has sha256 {actual[:12]}…, not the published {expected[:12]}… of "
            f"{release.filename}: damaged or another release; nothing was unpacked"
        )
    return LocalArchive(path=path, signature=signature, sha256=actual)


def unreachable_message(release: NextcloudRelease, host_name: str, reason: str) -> str:
    """One short line (it must survive the runner's 300 characters): what, from where, and the way out."""
    reason = " ".join(reason.split()) or "no answer"
    if len(reason) > 70:
        reason = reason[:69] + "…"
    return (
        f"{host_name} cannot download {release.url} ({reason}); set nextcloud.archive in stack.yaml "
        f"to a copy of {release.filename} (with its .asc next to it)"
    )
