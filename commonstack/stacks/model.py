"""The stack profile: what a group deploys, where, and how it is reached."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from commonstack.stacks import values
from commonstack.stacks.reading import excerpt
from commonstack.stacks.repository import parse_repository
from commonstack.stacks.versions import versions

# Reserved Unix users: Debian's system accounts and the ones the layers create. An admin user of
# that name would hand a service's account a login shell and sudo.
SYSTEM_USERS = frozenset({
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy",
    "www-data", "backup", "list", "irc", "gnats", "nobody", "_apt", "messagebus", "sshd",
    "systemd-network", "systemd-resolve", "systemd-timesync", "postgres", "redis", "caddy",
    "matrix-synapse", "turnserver", "docker",
})


def _admin_user(value: str) -> str:
    values.unix_user(value)
    if value in SYSTEM_USERS or value.startswith("systemd-"):
        raise ValueError(f"{value!r} is a system account on the hosts; choose another name, e.g. admin")
    return value


def _path(check):
    """A path type: the text is checked before it becomes a Path (strict models take no str as a Path)."""

    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError(f"expected a file path, got {excerpt(value)}")
        return check(value)

    return BeforeValidator(parse)


def _known(service: str):
    """A release of `service` that versions.yaml lists (what the kit can install and upgrade to)."""

    def check(value: str) -> str:
        pins = getattr(versions(), service)
        if value not in pins.releases:
            raise ValueError(f"{value!r} is not a release this kit knows; known: {', '.join(pins.known)}")
        return value

    return AfterValidator(check)


Domain = Annotated[str, AfterValidator(values.domain)]
Email = Annotated[str, AfterValidator(values.email)]
Slug = Annotated[str, AfterValidator(values.slug)]
Address = Annotated[str, AfterValidator(values.address)]
IPv4 = Annotated[str, AfterValidator(values.public_ipv4)]
UnixUser = Annotated[str, AfterValidator(values.unix_user)]
Text = Annotated[str, AfterValidator(values.text)]
Port = Annotated[int, Field(ge=1, le=65535)]
LocalPath = Annotated[Path, _path(values.local_path)]
GroupFile = Annotated[Path, _path(values.group_file)]
SshPublicKey = Annotated[str, AfterValidator(values.ssh_public_key)]
Commit = Annotated[str, AfterValidator(values.commit)]
AppId = Annotated[str, AfterValidator(values.app_id)]
# A tuning value: a count, megabytes or a factor; 10^6 MB is a terabyte, past any host of a group.
SizingValue = Annotated[int, Field(ge=0, le=10**6)] | Annotated[float, Field(ge=0, le=10**6, allow_inf_nan=False)]
Arch = Literal["amd64", "arm64", "armhf"]
# Hosts and keys a group could ever have; a list longer than this is a mistake, not a group.
MAX_HOSTS = 64
MAX_KEYS = 64
MAX_CERTIFICATES = 16
MAX_APPS = 64


class Settings(BaseModel):
    """Base of every profile section: unknown keys are errors, not silently ignored."""

    # strict: a port is a number and `enabled` a boolean; YAML's `true` is not a port, "22" not a number.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Host(Settings):
    """A machine the group owns or rents, reached over SSH."""

    name: Slug = Field(description="Short name used to place services, e.g. 'vps' or 'pi'.")
    address: Address = Field(description="IP address or DNS name the controller connects to.")
    user: UnixUser = Field("root", description="SSH user; a non-root user needs passwordless sudo.")
    port: Port = Field(22, description="SSH port.")
    ssh_key: LocalPath | None = Field(None, description="Private key file; default: your SSH agent/keys.")
    role: Text | None = Field(None, description="Free-form note, e.g. 'Raspberry Pi 4 at home'.")
    memory_mb: int | None = Field(
        None,
        ge=256,
        le=16 * 1024 * 1024,
        description="RAM to size for: offline, the host's RAM; on deploy, a cap below the real RAM "
        "(to leave room for other uses).",
    )
    cpus: int | None = Field(None, ge=1, le=1024, description="CPU hint for offline rendering.")
    arch: Arch | None = Field(None, description="Architecture hint for offline rendering.")
    sizing: dict[Annotated[str, AfterValidator(values.setting_name)], SizingValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Overrides of computed tuning, e.g. {php_fpm_max_children: 8}.",
    )


class Placed(Settings):
    """A service that can run on any declared host."""

    enabled: bool = False
    host: Slug | None = Field(None, description="Name of the host it runs on; default: the first host.")


Install = Literal["full", "prerequisites"]


class NextcloudSettings(Placed):
    hostname: Domain | None = Field(None, description="Default: cloud.DOMAIN.")
    archive: LocalPath | None = Field(
        None, description="Local Nextcloud tarball for offline installs (verified like a download)."
    )
    install: Install = Field(
        "full",
        description="prerequisites: deploy everything around Nextcloud (PHP-FPM, database, Redis, its "
        "site) but not Nextcloud itself, e.g. while its release cannot be fetched; full: install it too.",
    )
    default_phone_region: Annotated[str, AfterValidator(values.country_code)] | None = Field(
        None, description="ISO 3166-1 country code, e.g. DE."
    )
    version: Annotated[str, _known("nextcloud")] | None = Field(
        None,
        description="Hold Nextcloud at this release of the kit's versions.yaml; default: the kit's current "
        "one. A running Nextcloud changes release only through `commonstack upgrade`.",
    )
    apps: list[AppId] = Field(
        default_factory=lambda: ["calendar", "contacts"],
        max_length=MAX_APPS,
        description="Apps from Nextcloud's app store the group gets, installed and enabled (calendars and "
        "address books: calendar, contacts). Apps installed otherwise are left alone.",
    )
    app_archives: dict[AppId, LocalPath] = Field(
        default_factory=dict,
        max_length=MAX_APPS,
        description="Offline: a local archive per app (e.g. calendar: calendar-v6.0.2.tar.gz), of the release "
        "pinned in versions.yaml; relative to the group's folder.",
    )

    @model_validator(mode="after")
    def _archives_of_listed_apps(self) -> NextcloudSettings:
        duplicates = sorted({app for app in self.apps if self.apps.count(app) > 1})
        if duplicates:
            raise ValueError(f"apps: {duplicates[0]!r} is listed twice")
        unlisted = sorted(set(self.app_archives) - set(self.apps))
        if unlisted:
            raise ValueError(
                f"app_archives: {unlisted[0]!r} is not in nextcloud.apps: add it there or remove its archive"
            )
        return self


class TurnSettings(Settings):
    enabled: bool = True
    external_ip: IPv4 | None = Field(None, description="Public IPv4 when the host is behind NAT.")
    min_port: Port = Field(49160, ge=1024, description="First UDP relay port.")
    max_port: Port = Field(49200, ge=1024, description="Last UDP relay port.")

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
    version: Annotated[str, _known("synapse")] | None = Field(
        None,
        description="Hold Synapse at this release of the kit's versions.yaml; default: the kit's current "
        "one. A running Synapse changes release only through `commonstack upgrade`.",
    )


class LauncherSource(Settings):
    """Where the host fetches discourse_docker (the official launcher) from."""

    repository: Text | None = Field(
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
    port: Port = 587
    username: Text | None = None
    from_address: Email | None = Field(None, description="Default: noreply@DOMAIN.")
    starttls: bool = True


class TlsSettings(Settings):
    mode: Literal["acme", "internal"] = Field(
        "acme", description="acme: public certificates (Let's Encrypt by default); internal: Caddy's own CA."
    )
    email: Email | None = Field(None, description="ACME account email. Default: admin_email.")
    acme_ca: Annotated[str, AfterValidator(values.https_url)] | None = Field(
        None, description="ACME directory URL of another CA (https://...)."
    )
    acme_ca_root: GroupFile | None = Field(
        None, description="PEM root certificate of that CA, a file in the group's folder."
    )

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

    daily: int = Field(7, ge=0, le=10_000)
    weekly: int = Field(4, ge=0, le=10_000)
    monthly: int = Field(6, ge=0, le=10_000)


def _repository(value: str) -> str:
    parse_repository(value)
    return value


class BackupSettings(Settings):
    enabled: bool = False
    # The three kinds the kit sets up (the error lists them), then restic's grammar (no character a
    # command line or a unit could misread).
    repository: Annotated[str, AfterValidator(_repository), AfterValidator(values.restic_repository)] | None = Field(
        None,
        description="restic repository off the host: sftp:user@host:/srv/restic (another machine), a local "
        "path such as /mnt/usb/restic (a USB disk), or rest:https://host:8000/path (a rest-server).",
    )
    schedule: Annotated[str, AfterValidator(values.calendar)] = Field(
        "*-*-* 03:30:00", description="systemd OnCalendar expression."
    )
    retention: Retention = Field(default_factory=Retention)
    check_schedule: Annotated[str, AfterValidator(values.calendar)] = Field(
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
    user: Annotated[str, AfterValidator(_admin_user)] = Field(
        "admin", description="Unix user with sudo created on every host."
    )
    ssh_keys: list[SshPublicKey] = Field(
        default_factory=list, max_length=MAX_KEYS, description="Public keys allowed to log in (lines of .pub files)."
    )


class StackProfile(Settings):
    """A group's whole stack, after its preset and overrides are merged."""

    preset: Slug | None = Field(None, description="Preset the group started from (stacks/presets).")
    group: Slug
    domain: Domain
    admin_email: Email
    hosts: list[Host] = Field(min_length=1, max_length=MAX_HOSTS)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    nextcloud: NextcloudSettings = Field(default_factory=NextcloudSettings)
    matrix: MatrixSettings = Field(default_factory=MatrixSettings)
    discourse: DiscourseSettings = Field(default_factory=DiscourseSettings)
    smtp: SmtpSettings | None = None
    tls: TlsSettings = Field(default_factory=TlsSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    extra_ca_certificates: list[GroupFile] = Field(
        default_factory=list,
        max_length=MAX_CERTIFICATES,
        description="PEM certificates to trust on every host (TLS-intercepting networks), files in the "
        "group's folder.",
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
        duplicates = sorted(n for n, count in Counter(names).items() if count > 1)
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
