"""The pinned upstream versions (versions.yaml), loaded once into a validated, typed model."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, model_validator

from commonstack.errors import CommonstackError
from commonstack.stacks.reading import load_kit_yaml
from commonstack.stacks.version_numbers import numeric

VERSIONS_FILE = Path(__file__).parent / "versions.yaml"

# pydantic checks patterns with Rust's regex engine, where $ is the very end (no final newline).
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Commit = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}$")]
Version = Annotated[str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)*$")]


class Pins(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DebianRelease(Pins):
    """What a Debian release brings that the kit's configs depend on."""

    php: Version
    postgresql: Version
    nextcloud_max_major: int  # the newest Nextcloud major that supports this release's PHP
    imagemagick_extra: str  # the package of ImageMagick's extra coders (Imagick's SVG support)


class Releases(Pins):
    """An upstream service's known releases: `current` is what the kit installs and upgrades to."""

    current: Version
    releases: dict[Version, Any]  # narrowed by each service's model

    @model_validator(mode="after")
    def _current_is_known(self) -> Releases:
        if self.current not in self.releases:
            raise ValueError(f"current: {self.current} is not one of its releases ({', '.join(self.known)})")
        return self

    @property
    def version(self) -> str:
        """The current release (what a new host gets)."""
        return self.current

    @property
    def known(self) -> list[str]:
        """Every known release, oldest first."""
        return sorted(self.releases, key=numeric)

    def require_known(self, version: str, service: str) -> None:
        if version not in self.releases:
            raise UnknownRelease(f"{service} {version} is not a release this kit knows ({', '.join(self.known)})")


class UnknownRelease(CommonstackError):
    """A version that versions.yaml does not list for the service."""


class SynapseRelease(Pins):
    sha256: dict[str, Sha256]  # per Debian architecture: the manylinux wheel's hash
    python_min: Version  # the wheel's Requires-Python
    postgresql_min: Version  # the oldest PostgreSQL server it starts on


class SynapsePins(Releases):
    releases: dict[Version, SynapseRelease]

    @property
    def sha256(self) -> dict[str, str]:
        """The current release's wheel hashes."""
        return self.releases[self.current].sha256


class NextcloudRelease(Pins):
    sha256: Sha256 | None  # None: the published .sha256 is fetched with the release (the signature decides)
    php_min: Version
    php_max: Version


class NextcloudPins(Releases):
    url: str  # "{version}" stands for the release's
    gpg_fingerprint: str
    gpg_key: Path  # relative to versions.yaml
    releases: dict[Version, NextcloudRelease]

    @property
    def key_file(self) -> Path:
        return VERSIONS_FILE.parent / self.gpg_key

    def url_of(self, version: str) -> str:
        return self.url.format(version=version)

    @property
    def sha256(self) -> str | None:
        """The current release's published sha256."""
        return self.releases[self.current].sha256


class NextcloudAppPin(Pins):
    """One release of a Nextcloud app, for installs from a local archive (nextcloud.app_archives)."""

    version: Version
    url: str  # where the app store's download of this release points
    sha256: Sha256 | None  # of the archive; None: not pinned yet, so no local archive is accepted
    min_major: int  # the Nextcloud majors it supports (its appinfo/info.xml <nextcloud .../>)
    max_major: int

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def suits(self, major: int) -> bool:
        return self.min_major <= major <= self.max_major


class NextcloudAppsPins(Pins):
    store: str  # what the host must reach to install apps from Nextcloud's app store
    releases: dict[str, NextcloudAppPin]  # by app id


class DiscourseDockerPins(Pins):
    repository: str
    commit: Commit
    docker_min_version: Version

    @property
    def version(self) -> str:
        """The launcher's commit is the forum's release, as far as the kit pins it."""
        return self.commit


class Versions(Pins):
    debian: dict[str, DebianRelease]  # by codename
    synapse: SynapsePins
    nextcloud: NextcloudPins
    nextcloud_apps: NextcloudAppsPins
    discourse_docker: DiscourseDockerPins


@cache
def versions() -> Versions:
    """versions.yaml as a model; a broken file is the kit's own fault, named in one line."""
    try:
        return Versions.model_validate(load_kit_yaml(VERSIONS_FILE))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise CommonstackError(f"{VERSIONS_FILE}: {' '.join(str(exc).split())}") from None
