"""The stack profile: what a group deploys, where, and how it is reached."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN_RE = re.compile(rf"^(?:{_LABEL}\.)+[a-z]{{2,63}}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SLUG_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_ADDRESS_RE = re.compile(rf"^(?:{_LABEL}\.)*{_LABEL}$")


def _domain(value: str) -> str:
    value = value.strip().lower().rstrip(".")
    if not _DOMAIN_RE.match(value):
        raise ValueError(f"expected a DNS name like example.org, got {value!r}")
    return value


def _email(value: str) -> str:
    if not _EMAIL_RE.match(value):
        raise ValueError(f"expected an email address like admin@example.org, got {value!r}")
    return value


def _slug(value: str) -> str:
    if not _SLUG_RE.match(value):
        raise ValueError(
            f"expected a short lowercase name (letters, digits, '-'; starting with a letter), got {value!r}"
        )
    return value


def _address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _ADDRESS_RE.match(value.lower()):
        raise ValueError(f"expected an IP address or a DNS name, got {value!r}")
    return value.lower()


def _commit(value: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{40}", value):
        raise ValueError(f"expected a full 40-character git commit hash (lowercase hex), got {value[:50]!r}")
    return value


def _public_ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"expected an IPv4 address like 203.0.113.7, got {value!r}") from None


Domain = Annotated[str, AfterValidator(_domain)]
Email = Annotated[str, AfterValidator(_email)]
Slug = Annotated[str, AfterValidator(_slug)]
Address = Annotated[str, AfterValidator(_address)]
IPv4 = Annotated[str, AfterValidator(_public_ipv4)]
Commit = Annotated[str, AfterValidator(_commit)]
Arch = Literal["amd64", "arm64", "armhf"]


class Settings(BaseModel):
    """Base of every profile section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Host(Settings):
    """A machine the group owns or rents, reached over SSH."""

    name: Slug = Field(description="Short name used to place services, e.g. 'vps' or 'pi'.")
    address: Address = Field(description="IP address or DNS name the controller connects to.")
    user: str = Field("root", description="SSH user; a non-root user needs passwordless sudo.")
    port: int = Field(22, ge=1, le=65535, description="SSH port.")
    ssh_key: Path | None = Field(None, description="Private key file; default: your SSH agent/keys.")
    role: str | None = Field(None, description="Free-form note, e.g. 'Raspberry Pi 4 at home'.")
    memory_mb: int | None = Field(
        None,
        ge=256,
        description="RAM to size for: offline, the host's RAM; on deploy, a cap below the real RAM "
        "(to leave room for other uses).",
    )
    cpus: int | None = Field(None, ge=1, description="CPU hint for offline rendering.")
    arch: Arch | None = Field(None, description="Architecture hint for offline rendering.")
    sizing: dict[str, int | float] = Field(
        default_factory=dict, description="Overrides of computed tuning, e.g. {php_fpm_max_children: 8}."
    )


class Placed(Settings):
    """A service that can run on any declared host."""

    enabled: bool = False
    host: Slug | None = Field(None, description="Name of the host it runs on; default: the first host.")


Install = Literal["full", "prerequisites"]


class NextcloudSettings(Placed):
    hostname: Domain | None = Field(None, description="Default: cloud.DOMAIN.")
    archive: Path | None = Field(
        None, description="Local Nextcloud tarball for offline installs (verified like a download)."
    )
    install: Install = Field(
        "full",
        description="prerequisites: deploy everything around Nextcloud (PHP-FPM, database, Redis, its "
        "site) but not Nextcloud itself, e.g. while its release cannot be fetched; full: install it too.",
    )
    default_phone_region: str | None = Field(
        None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 country code, e.g. DE."
    )


class TurnSettings(Settings):
    enabled: bool = True
    external_ip: IPv4 | None = Field(None, description="Public IPv4 when the host is behind NAT.")
    min_port: int = Field(49160, ge=1024, le=65535, description="First UDP relay port.")
    max_port: int = Field(49200, ge=1024, le=65535, description="Last UDP relay port.")

    @model_validator(mode="after")
    def _port_range(self) -> TurnSettings:
        if self.min_port > self.max_port:
            raise ValueError(f"min_port ({self.min_port}) is above max_port ({self.max_port})")
        return self


class MatrixSettings(Placed):
    server_name: Domain | None = Field(
        None, description="The part after ':' in @user:NAME. Default: DOMAIN. Cannot change later."
    )
    hostname: Domain | None = Field(None, description="Where Synapse is served. Default: matrix.DOMAIN.")
    registration: Literal["closed", "token"] = Field(
        "closed", description="closed: only the admin creates accounts; token: invitation tokens."
    )
    turn: TurnSettings = Field(default_factory=TurnSettings)


class LauncherSource(Settings):
    """Where the host fetches discourse_docker (the official launcher) from."""

    repository: str | None = Field(
        None, description="A git URL or path the host can reach, e.g. a mirror. Default: versions.yaml's."
    )
    commit: Commit | None = Field(None, description="The full commit to check out. Default: versions.yaml's.")


class DiscourseSettings(Placed):
    hostname: Domain | None = Field(None, description="Default: forum.DOMAIN.")
    launcher: LauncherSource = Field(default_factory=LauncherSource)
    install: Install = Field(
        "full",
        description="prerequisites: deploy what needs no upstream site (Docker, app.yml) but not the forum "
        "itself; full: fetch the launcher and build the forum too (needs github.com and Docker Hub).",
    )


class SmtpSettings(Settings):
    """A mail relay; its password lives in secrets.yaml as smtp_password."""

    host: Address
    port: int = Field(587, ge=1, le=65535)
    username: str | None = None
    from_address: Email | None = Field(None, description="Default: noreply@DOMAIN.")
    starttls: bool = True


class TlsSettings(Settings):
    mode: Literal["acme", "internal"] = Field(
        "acme", description="acme: public certificates (Let's Encrypt by default); internal: Caddy's own CA."
    )
    email: Email | None = Field(None, description="ACME account email. Default: admin_email.")
    acme_ca: str | None = Field(
        None, pattern=r"^https://", description="ACME directory URL of another CA (https://...)."
    )
    acme_ca_root: Path | None = Field(None, description="PEM root certificate of that CA.")

    @model_validator(mode="after")
    def _ca_pair(self) -> TlsSettings:
        if self.acme_ca_root and not self.acme_ca:
            raise ValueError("acme_ca_root is set but acme_ca is not: give the CA's directory URL too")
        if self.mode == "internal" and self.acme_ca:
            raise ValueError("acme_ca only applies to mode: acme")
        return self


class Retention(Settings):
    """How many routine snapshots `restic forget --prune` keeps; snapshots taken before an upgrade
    or a restore are kept apart from these."""

    daily: int = Field(7, ge=0)
    weekly: int = Field(4, ge=0)
    monthly: int = Field(6, ge=0)


def _repository(value: str) -> str:
    from commonstack.stacks.repository import parse_repository

    parse_repository(value)
    return value


class BackupSettings(Settings):
    enabled: bool = False
    repository: Annotated[str, AfterValidator(_repository)] | None = Field(
        None,
        description="restic repository off the host: sftp:user@host:/srv/restic (another machine), a local "
        "path such as /mnt/usb/restic (a USB disk), or rest:https://host:8000/path (a rest-server).",
    )
    schedule: str = Field("*-*-* 03:30:00", description="systemd OnCalendar expression.")
    retention: Retention = Field(default_factory=Retention)
    check_schedule: str = Field(
        "Sun *-*-* 05:00:00", description="When `restic check` reads a part of the repository back (OnCalendar)."
    )
    check_read_data: str = Field(
        "5%", pattern=r"^[0-9]+(\.[0-9]+)?%$", description="How much of the stored data each check reads back."
    )

    @model_validator(mode="after")
    def _needs_repository(self) -> BackupSettings:
        if self.enabled and not self.repository:
            raise ValueError("backup is enabled but has no repository (e.g. sftp:user@host:/srv/restic)")
        return self


class AdminSettings(Settings):
    user: Slug = Field("admin", description="Unix user with sudo created on every host.")
    ssh_keys: list[str] = Field(default_factory=list, description="Public keys allowed to log in.")


class StackProfile(Settings):
    """A group's whole stack, after its preset and overrides are merged."""

    preset: Slug | None = Field(None, description="Preset the group started from (stacks/presets).")
    group: Slug
    domain: Domain
    admin_email: Email
    hosts: list[Host] = Field(min_length=1)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    nextcloud: NextcloudSettings = Field(default_factory=NextcloudSettings)
    matrix: MatrixSettings = Field(default_factory=MatrixSettings)
    discourse: DiscourseSettings = Field(default_factory=DiscourseSettings)
    smtp: SmtpSettings | None = None
    tls: TlsSettings = Field(default_factory=TlsSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    extra_ca_certificates: list[Path] = Field(
        default_factory=list, description="PEM files to trust on every host (TLS-intercepting networks)."
    )
    offline: bool = Field(
        False,
        description="The hosts reach Debian's and PyPI's mirrors but no upstream download site "
        "(download.nextcloud.com, github.com, Docker Hub): what needs one is refused by deploy and "
        "left out by try, without contacting it. Give nextcloud.archive for Nextcloud.",
    )

    @model_validator(mode="after")
    def _coherent(self) -> StackProfile:
        names = [h.name for h in self.hosts]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"hosts: the name {duplicates[0]!r} is declared twice; host names must be unique")
        for service in ("nextcloud", "matrix", "discourse"):
            placed = getattr(self, service).host
            if placed is not None and placed not in names:
                raise ValueError(
                    f"{service}.host: {placed!r} is not a declared host (declared: {', '.join(names)})"
                )
        seen: dict[str, str] = {}
        for service, hostname in self.hostnames().items():
            if hostname in seen:
                raise ValueError(f"{service} and {seen[hostname]} both use the hostname {hostname}")
            seen[hostname] = service
        if self.discourse.enabled and self.smtp is None:
            raise ValueError(
                "discourse is enabled but smtp is not set: Discourse cannot work without email "
                "(add smtp.host, smtp.username and put smtp_password in secrets.yaml)"
            )
        if not self.enabled_services():
            raise ValueError("no service is enabled: enable nextcloud, matrix or discourse")
        return self

    # Derived values live here so templates, deploys and checks agree on them.

    def enabled_services(self) -> list[str]:
        return [s for s in ("nextcloud", "matrix", "discourse") if getattr(self, s).enabled]

    def host_of(self, service: str) -> Host:
        placed = getattr(self, service).host
        return next((h for h in self.hosts if h.name == placed), self.hosts[0])

    def services_on(self, host: Host) -> frozenset[str]:
        """Services running on a host; 'turn' follows Matrix."""
        services = {s for s in self.enabled_services() if self.host_of(s).name == host.name}
        if "matrix" in services and self.matrix.turn.enabled:
            services.add("turn")
        return frozenset(services)

    def hostnames(self) -> dict[str, str]:
        """Public hostname of every enabled web-facing service."""
        names = {}
        if self.nextcloud.enabled:
            names["nextcloud"] = self.nextcloud.hostname or f"cloud.{self.domain}"
        if self.matrix.enabled:
            names["matrix"] = self.matrix.hostname or f"matrix.{self.domain}"
        if self.discourse.enabled:
            names["discourse"] = self.discourse.hostname or f"forum.{self.domain}"
        return names

    @property
    def server_name(self) -> str:
        return self.matrix.server_name or self.domain

    @property
    def tls_email(self) -> str:
        return self.tls.email or self.admin_email
