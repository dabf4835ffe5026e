"""Rendering every config file a host receives, offline, from the jinja2 templates.

Templates live in templates/<service>/ laid out like the paths they are written to; a path
segment may name a release-dependent version ({php_version}, {postgresql_version}). Each
service folder may hold a files.yaml giving mode/owner/group of files that are not 0644 root.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import yaml

from commonstack import formats
from commonstack.stacks.model import Host, StackProfile
from commonstack.stacks.sizing import HostFacts, Sizing, compute_sizing, minimum_memory_mb

TEMPLATES_DIR = Path(__file__).parent / "templates"
VERSIONS_FILE = Path(__file__).parent / "stacks" / "versions.yaml"

# Configuration layers in the order a host is converged; each is a folder of templates.
LAYERS = ("base", "postgres", "redis", "caddy", "synapse", "coturn", "element", "nextcloud", "discourse", "backup")


@dataclass(frozen=True)
class Release:
    """What a host runs, as far as configs care: facts plus its Debian release."""

    facts: HostFacts
    codename: str = "bookworm"


@dataclass(frozen=True)
class ConfigFile:
    layer: str
    path: str
    content: str
    mode: str = "0644"
    user: str = "root"
    group: str = "root"


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

    @property
    def php_version(self) -> str:
        return versions()["debian"][self.release.codename]["php"]

    @property
    def postgresql_version(self) -> str:
        return versions()["debian"][self.release.codename]["postgresql"]

    def files_of(self, layer: str) -> list[ConfigFile]:
        return [f for f in self.files if f.layer == layer]


@cache
def versions() -> dict[str, Any]:
    return yaml.safe_load(VERSIONS_FILE.read_text())


def layers_on(profile: StackProfile, host: Host) -> tuple[str, ...]:
    services = profile.services_on(host)
    serves_delegation = "matrix" in services and profile.server_name != profile.hostnames()["matrix"]
    wanted = {
        "base": True,
        "postgres": bool(services & {"nextcloud", "matrix"}),
        "redis": "nextcloud" in services,
        "caddy": bool(services) or serves_delegation,
        "synapse": "matrix" in services,
        "coturn": "turn" in services,
        "element": "element" in services,
        "nextcloud": "nextcloud" in services,
        "discourse": "discourse" in services,
        "backup": profile.backup.enabled,
    }
    return tuple(layer for layer in LAYERS if wanted[layer])


def firewall_ports(profile: StackProfile, host: Host) -> list[dict[str, Any]]:
    """Inbound ports the host must open: exactly what its enabled services need."""
    services = profile.services_on(host)
    ports = [{"proto": "tcp", "port": str(host.port), "why": "SSH"}]
    if "caddy" in layers_on(profile, host):
        ports += [
            {"proto": "tcp", "port": "80", "why": "HTTP (ACME challenges, redirect to HTTPS)"},
            {"proto": "tcp", "port": "443", "why": "HTTPS"},
            {"proto": "udp", "port": "443", "why": "HTTP/3"},
        ]
    if "turn" in services:
        turn = profile.matrix.turn
        ports += [
            {"proto": "tcp", "port": "3478", "why": "TURN"},
            {"proto": "udp", "port": "3478", "why": "TURN"},
            {"proto": "tcp", "port": "5349", "why": "TURN over TLS"},
            {"proto": "udp", "port": "5349", "why": "TURN over DTLS"},
            {"proto": "udp", "port": f"{turn.min_port}-{turn.max_port}", "why": "TURN relays"},
        ]
    return ports


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
    sizing = compute_sizing(release.facts, profile.services_on(host), host.sizing or None)
    layers = layers_on(profile, host)
    debian = versions()["debian"][release.codename]
    context = {
        "profile": profile,
        "host": host,
        "facts": release.facts,
        "codename": release.codename,
        "php_version": debian["php"],
        "postgresql_version": debian["postgresql"],
        "sizing": sizing,
        "services": profile.services_on(host),
        "layers": layers,
        "hostnames": profile.hostnames(),
        "firewall_ports": firewall_ports(profile, host),
        "secrets": secrets,
        "versions": versions(),
    }
    files = [f for layer in layers for f in _render_layer(layer, context)]
    return HostPlan(
        profile=profile, host=host, release=release, layers=layers, sizing=sizing, secrets=secrets, files=files
    )


def _render_layer(layer: str, context: dict[str, Any]) -> list[ConfigFile]:
    folder = TEMPLATES_DIR / layer
    meta = _file_meta(layer)
    rendered = []
    for template in sorted(folder.rglob("*.j2")):
        relative = template.relative_to(folder).as_posix()
        target = "/" + relative.removesuffix(".j2").format(**context)
        content = _environment().get_template(f"{layer}/{relative}").render(context)
        rendered.append(ConfigFile(layer=layer, path=target, content=content, **meta.get(target, {})))
    return rendered


@cache
def _file_meta(layer: str) -> dict[str, dict[str, str]]:
    meta_file = TEMPLATES_DIR / layer / "files.yaml"
    if not meta_file.is_file():
        return {}
    return {path: {k: str(v) for k, v in attrs.items()} for path, attrs in yaml.safe_load(meta_file.read_text()).items()}


@jinja2.pass_context
def _one_value(context: jinja2.runtime.Context, value: Any) -> Any:
    """Every {{ ... }} of every template: a number, or text of one line (whatever filter it went
    through), never None or a boolean (a template bug that would write 'None' into a config)."""
    if isinstance(value, str):
        return formats.one_line(value, context.name.removesuffix(".j2"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise formats.UnsafeValue(f"{context.name}: a template wrote {type(value).__name__}, not text or a number")


@cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        finalize=_one_value,
    )
    # One filter per format a value is written into (see formats.py); YAML and JSON use tojson.
    environment.filters.update({
        "caddy": formats.caddy,
        "caddy_address": formats.caddy_address,
        "systemd": formats.systemd,
        "systemd_arg": formats.systemd_arg,
        "systemd_env": formats.systemd_env,
        "shell": formats.shell,
        "conf": formats.conf,
        "line": formats.one_line,
        "sudoers_user": formats.sudoers_user,
    })
    return environment
