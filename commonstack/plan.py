"""A group's plan: every host sized, its layers chosen and its configs rendered, before any SSH.

The same plan serves every command: `validate` and `render` make it from the profile's hints,
`plan` and `deploy` from the facts each host reports, and the checks read what to expect of a
host from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from commonstack.errors import CommonstackError, ProfileError
from commonstack.formats import UnsafeValue
from commonstack.inventories.groups import Group
from commonstack.rendering import ConfigFile, render_layer
from commonstack.inventories.backup_keys import SEED_SECRET, backup_key
from commonstack.inventories.known_hosts import host_pattern
from commonstack.stacks import paths, values
from commonstack.stacks.certificates import MAX_BYTES, NotCertificates, ca_certificates
from commonstack.stacks.host_report import HostReport
from commonstack.stacks.layers import firewall_ports, layer, layers_on, saved_paths
from commonstack.stacks.model import Host, StackProfile
from commonstack.stacks.reading import ReadError, read_text
from commonstack.stacks.repository import Repository, parse_repository
from commonstack.stacks.sizing import HostFacts, HostTooSmall, Sizing, UnsupportedArchitecture, compute_sizing
from commonstack.stacks.sizing import debian_arch, minimum_memory_mb
from commonstack.stacks.versions import DebianRelease, versions

CA_FOLDER = "/usr/local/share/ca-certificates/commonstack"
ACME_ROOT = "/etc/caddy/acme-ca-root.pem"
BACKUP_SSH_KEY = f"{paths.BACKUP_CONFIG_DIR}/backup-ssh-key"
BACKUP_KNOWN_HOSTS = f"{paths.BACKUP_CONFIG_DIR}/backup-known_hosts"


def kit_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("commonstack")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


@dataclass(frozen=True)
class Release:
    """What a host runs, as far as configs care: facts plus its Debian release."""

    facts: HostFacts
    codename: str = "bookworm"

    @property
    def debian(self) -> DebianRelease:
        return versions().debian[self.codename]


@dataclass(frozen=True)
class HostPlan:
    """Everything one host receives: its layers, tuning and rendered files."""

    profile: StackProfile
    host: Host
    release: Release
    layers: tuple[str, ...]
    sizing: Sizing
    secrets: Mapping[str, str]
    files: list[ConfigFile] = field(default_factory=list)
    # The release of each layer found running on the host (read by the deploy before it adds an
    # operation): a deploy keeps it, only `commonstack upgrade` changes it.
    installed: Mapping[str, str] = field(default_factory=dict)

    @property
    def services(self) -> frozenset[str]:
        return self.profile.services_on(self.host)

    @property
    def php_version(self) -> str:
        return self.release.debian.php

    @property
    def postgresql_version(self) -> str:
        return self.release.debian.postgresql

    def files_of(self, layer_name: str) -> list[ConfigFile]:
        return [f for f in self.files if f.layer == layer_name]

    def packages_of(self, layer_names: tuple[str, ...]) -> list[str]:
        """The Debian packages of these layers, for this host's release."""
        debian = self.release.debian
        names = {"php": debian.php, "postgresql": debian.postgresql, "imagemagick_extra": debian.imagemagick_extra}
        return [p.format(**names) for name in layer_names for p in layer(name).packages]

    def units_of(self, layer_name: str) -> list[str]:
        return [unit.format(php=self.php_version) for unit in layer(layer_name).units]

    @property
    def sysctl(self) -> list[tuple[str, str]]:
        """The kernel settings the host's layers want (sysctl key or "conf.*" glob, value)."""
        return [setting for name in self.layers for setting in layer(name).sysctl]

    @property
    def jails(self) -> list[str]:
        """The fail2ban jails guarding the logins of the host's layers."""
        return [jail for name in self.layers for jail in layer(name).jails]

    def sandboxed_units_of(self, layer_name: str) -> list[str]:
        names = {"php": self.php_version, "postgresql": self.postgresql_version}
        return [unit.format(**names) for unit in layer(layer_name).sandboxed]

    def wanted_version(self, layer_name: str) -> str:
        """The release the profile asks for (its held version), else the kit's current one."""
        return wanted_version(self.profile, layer_name)

    def deploy_version(self, layer_name: str) -> str:
        """The release a deploy converges the layer to: the one running, else the wanted one."""
        return self.installed.get(layer_name) or self.wanted_version(layer_name)


def wanted_version(profile: StackProfile, layer_name: str) -> str:
    """What the profile holds the layer at (its `profile_key`), else versions.yaml's current release."""
    upgrade = layer(layer_name).upgrade
    if upgrade is None or upgrade.pins is None:
        raise ValueError(f"{layer_name} has no releases of its own")
    value: Any = profile
    for key in (upgrade.profile_key or "").split("."):
        value = getattr(value, key, None) if key else None
    return value or getattr(versions(), upgrade.pins).version


def offline_release(profile: StackProfile, host: Host) -> Release:
    """Facts from the profile's hints; without hints, the smallest host that fits its services."""
    arch = host.arch or "amd64"
    memory = host.memory_mb or minimum_memory_mb(profile.services_on(host), arch)
    return Release(HostFacts(memory_mb=memory, cpus=host.cpus or 2, arch=arch))


def plan_host(
    profile: StackProfile, host: Host, secrets: Mapping[str, str], release: Release | None = None
) -> HostPlan:
    """Size a host and render all its files (raises HostTooSmall before rendering anything)."""
    release = release or offline_release(profile, host)
    services = profile.services_on(host)
    sizing = compute_sizing(release.facts, services, host.sizing or None)
    layers = layers_on(profile, host)
    context: dict[str, Any] = {
        "profile": profile,
        "host": host,
        "facts": release.facts,
        "codename": release.codename,
        "php_version": release.debian.php,
        "postgresql_version": release.debian.postgresql,
        "sizing": sizing,
        "services": services,
        "layers": layers,
        "hostnames": profile.hostnames(),
        "firewall_ports": firewall_ports(profile, host),
        "jails": [jail for name in layers for jail in layer(name).jails],
        "sysctl": [setting for name in layers for setting in layer(name).sysctl],
        "secrets": secrets,
        "versions": versions(),
        "paths": paths,
        "kit_version": kit_version(),
        **_backup_context(profile, layers, release),
    }
    files = [f for name in layers for f in render_layer(name, context)]
    repository = context["repository"]
    if "backup" in layers and repository.kind == "sftp":
        # The host's own key for the repository, derived from secrets.yaml (inventories/backup_keys.py).
        seed = secrets.get(SEED_SECRET, "")
        # `render` and `validate` have placeholders for secrets: no key is made from one.
        private = f"{seed}\n" if seed.startswith("<") else backup_key(seed, profile.group, host.name).private
        files.append(ConfigFile(layer="backup", path=BACKUP_SSH_KEY, content=private, mode="0600"))
    return HostPlan(profile, host, release, layers, sizing, secrets, files)


def _backup_context(profile: StackProfile, layers: tuple[str, ...], release: Release) -> dict[str, Any]:
    """What the backup script is rendered from: the registry's declarations of the host's layers.

    A service deployed as prerequisites only (nextcloud.install, discourse.install) has no code to
    pause or ask its version, and no data yet: it is left out until it is installed."""
    held = {name for name in ("nextcloud", "discourse") if getattr(profile, name).install == "prerequisites"}
    layers = tuple(name for name in layers if name not in held)
    parts = [
        {
            "name": name,
            "spec": spec,
            "units": [unit.format(php=release.debian.php) for unit in layer(name).units],
            "collations": {database.name: database.collation for database in layer(name).databases},
            "restorable": spec.restorable,
        }
        for name in layers
        if (spec := layer(name).backup)
    ]
    address = profile.backup.repository
    try:
        repository = parse_repository(values.restic_repository(address)) if address else Repository("", "local")
    except ValueError:  # a profile that bypassed validation: refuse without quoting the value
        raise UnsafeValue("backup.repository is not a repository address the kit can write into its files") from None
    return {
        "backup_layers": parts,
        "backup_paths": saved_paths(layers),
        "backup_excludes": sorted({pattern for part in parts for pattern in part["spec"].exclude}),
        "repository": repository,
    }


def plan_group(
    group: Group,
    profile: StackProfile,
    secrets: Mapping[str, str],
    releases: Mapping[str, Release] | None = None,
) -> list[HostPlan]:
    """Plan every host; `releases` carries real facts when a deploy has gathered them."""
    return [plan_one(group, profile, host, secrets, (releases or {}).get(host.name)) for host in profile.hosts]


def plan_one(
    group: Group, profile: StackProfile, host: Host, secrets: Mapping[str, str], release: Release | None
) -> HostPlan:
    """Size and render one host, plus the certificate files the profile points to."""
    index = profile.hosts.index(host)
    try:
        plan = plan_host(profile, host, secrets, release)
    except (HostTooSmall, UnsupportedArchitecture) as exc:
        raise ProfileError(group.stack_file, str(exc), key=f"hosts[{index}] ({host.name})") from None
    except UnsafeValue as exc:  # a value the grammars let through but a format cannot hold
        raise ProfileError(group.stack_file, f"{exc}; check the values written for host {host.name}") from None
    except ValueError as exc:  # the only other ValueError of sizing: a bad override
        raise ProfileError(group.stack_file, str(exc), key=f"hosts[{index}].sizing") from None
    for number, path in enumerate(profile.extra_ca_certificates):
        pem = _read_pem(group, path, f"extra_ca_certificates[{number}]")
        plan.files.append(ConfigFile(layer="base", path=f"{CA_FOLDER}/extra-{number}.crt", content=pem))
    if profile.tls.acme_ca_root and "caddy" in plan.layers:
        pem = _read_pem(group, profile.tls.acme_ca_root, "tls.acme_ca_root")
        plan.files.append(ConfigFile(layer="caddy", path=ACME_ROOT, content=pem))
    if "backup" in plan.layers and profile.backup.repository:
        repository = parse_repository(profile.backup.repository)
        if repository.kind == "sftp":
            lines = repository_host_keys(group, repository)
            plan.files.append(ConfigFile(layer="backup", path=BACKUP_KNOWN_HOSTS, content="".join(lines)))
    return plan


class UnsupportedRelease(CommonstackError):
    """A host that runs what the kit does not deploy on (another system, another Debian release)."""


def judged(report: HostReport, name: str) -> Release:
    """Host `name`'s Release, as rendering and sizing need it; UnsupportedRelease for what the kit
    does not deploy on (another system, another Debian release)."""
    codename = report.os.get("VERSION_CODENAME", "")
    if report.os.get("ID") != "debian" or codename not in versions().debian:
        runs = report.os.get("PRETTY_NAME") or report.os.get("NAME") or "a system without /etc/os-release"
        raise UnsupportedRelease(f"{name}: runs {runs}; commonstack supports Debian ({', '.join(versions().debian)})")
    return Release(HostFacts(memory_mb=report.memory_mb, cpus=report.cpus or 1, arch=debian_arch(report.machine)), codename)


def plan_measured(
    group: Group, profile: StackProfile, name: str, secrets: Mapping[str, str], release: Release
) -> HostPlan:
    """The plan of the profile's host `name`, sized for what it really is."""
    wanted = next(h for h in profile.hosts if h.name == name)
    if wanted.memory_mb and wanted.memory_mb < release.facts.memory_mb:
        # The profile may reserve RAM for other uses: size for its figure, not the machine's.
        release = replace(release, facts=replace(release.facts, memory_mb=wanted.memory_mb))
    return plan_one(group, profile, wanted, secrets, release)


def repository_host_keys(group: Group, repository: Repository) -> list[str]:
    """The lines of the group's known_hosts that pin the SFTP repository server's key."""
    pattern = host_pattern(repository.server or "", repository.port)
    if not group.known_hosts.is_file():
        return []
    try:
        pinned = read_text(group.known_hosts)
    except ReadError as exc:
        raise ProfileError(group.known_hosts, exc.message) from None
    return [
        line + "\n"
        for line in pinned.splitlines()
        if line.split() and pattern in line.split()[0].split(",")
    ]


def _read_pem(group: Group, path: Path, key: str) -> str:
    """The certificates of a PEM file in the group's folder (the profile's grammar keeps the path
    inside it; a link out of it is refused before it is followed to a file)."""
    full = group.folder / path
    try:
        inside = full.resolve().is_relative_to(group.folder.resolve())
    except (OSError, RuntimeError):  # a loop of links (RuntimeError before Python 3.13)
        raise ProfileError(group.stack_file, f"{full}: a loop of symbolic links", key=key) from None
    if not inside:
        raise ProfileError(group.stack_file, f"{path} leads outside the group's folder {group.folder}; "
                           "copy the certificate into that folder", key=key)  # fmt: skip
    try:
        return ca_certificates(read_text(full, limit=MAX_BYTES))
    except (ReadError, NotCertificates) as exc:
        raise ProfileError(group.stack_file, f"{full}: {exc}", key=key) from None
