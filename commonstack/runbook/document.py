"""The handover runbook of a group: what runs where, how to reach it, and how to look after it.

Written offline from the group's folder (stack.yaml, the names of its secrets, the last saved
health check) and the pinned versions; nothing is contacted. Secret values are never read: the
runbook says where they are. One set of facts, two forms: Markdown (runbook.md) for a repository
or a wiki, HTML (runbook.html, inline CSS, no scripts) for a browser or a printout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import jinja2
from markupsafe import Markup, escape

from commonstack.inventories.groups import Group, preset_services
from commonstack.inventories.last_check import LastCheck, load_last_check
from commonstack.inventories.secrets import provided_secrets
from commonstack.plan import offline_release
from commonstack.stacks.layers import firewall_ports, generated_secrets, layer, layers_on
from commonstack.stacks.loader import load_preset
from commonstack.stacks.model import Host, StackProfile
from commonstack.stacks.paths import MATRIX_ADMIN_LOCALPART as MATRIX_ADMIN
from commonstack.stacks.paths import NEXTCLOUD_ADMIN
from commonstack.stacks.versions import versions

TEMPLATES = Path(__file__).parent

SERVICE_NAMES = {
    "nextcloud": "Nextcloud (files, calendars, contacts)",
    "matrix": "Matrix homeserver (Synapse): chat",
    "turn": "TURN relay (coturn): voice and video calls",
    "discourse": "Discourse (the forum)",
}
# The layers a host runs underneath its services (the registry's summaries say what each is).
SHARED_LAYERS = ("postgres", "redis", "caddy", "docker", "backup")
SECRET_PURPOSES = {
    "nextcloud_admin_password": "Nextcloud's admin password",
    "matrix_admin_password": "the Matrix admin's password",
    "postgres_nextcloud_password": "Nextcloud's database password",
    "postgres_synapse_password": "Synapse's database password",
    "synapse_registration_shared_secret": "creates Matrix accounts (register_new_matrix_user)",
    "synapse_macaroon_secret_key": "signs Matrix login tokens",
    "synapse_form_secret": "signs Matrix consent forms",
    "turn_shared_secret": "lets Synapse hand out TURN credentials",
    "restic_password": "unlocks the backups: without it they cannot be read",
    "smtp_password": "the mail relay's password",
}


@dataclass(frozen=True)
class HostSection:
    name: str
    address: str
    ssh: str
    role: str | None
    size: str
    services: list[str]
    underneath: list[str]
    ports: list[str]


@dataclass(frozen=True)
class Site:
    address: str
    purpose: str
    host: str


@dataclass(frozen=True)
class Login:
    what: str
    where: str
    user: str
    password: str


@dataclass(frozen=True)
class Task:
    title: str
    command: str
    note: str = ""


@dataclass(frozen=True)
class Runbook:
    group: str
    domain: str
    preset: str | None
    description: str
    admin_email: str
    written_at: str
    kit_version: str
    hosts: list[HostSection]
    sites: list[Site]
    logins: list[Login]
    secrets_file: str
    secrets: list[tuple[str, str]]
    backups: list[str]
    tasks: list[Task]
    last_check: LastCheck | None
    check_command: str
    versions: list[tuple[str, str]]
    notes: list[str] = field(default_factory=list)


def runbook(group: Group, profile: StackProfile) -> Runbook:
    """The facts of the runbook, from the group's folder only."""
    name = group.name
    preset = load_preset(profile.preset) if profile.preset else None
    return Runbook(
        group=name,
        domain=profile.domain,
        preset=profile.preset,
        description=preset.description if preset else "",
        admin_email=profile.admin_email,
        written_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        kit_version=_kit_version(),
        hosts=[_host_section(group, profile, host) for host in profile.hosts],
        sites=_sites(profile),
        logins=_logins(group, profile),
        secrets_file=str(group.secrets_file),
        secrets=[(s, SECRET_PURPOSES.get(s, "")) for s in generated_secrets(profile) + list(provided_secrets(profile))],
        backups=_backups(group, profile),
        tasks=_tasks(name, profile),
        last_check=load_last_check(group.last_check_file),
        check_command=f"commonstack check {name}",
        versions=_versions(profile),
        notes=_notes(profile),
    )


def write_runbook(group: Group, profile: StackProfile, out: Path) -> list[Path]:
    """Write OUT/runbook.md and OUT/runbook.html; returns their paths."""
    facts = runbook(group, profile)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for form in ("md", "html"):
        path = out / f"runbook.{form}"
        path.write_text(_environment(form).get_template(f"runbook.{form}.j2").render(book=facts))
        written.append(path)
    return written


def _host_section(group: Group, profile: StackProfile, host: Host) -> HostSection:
    services = profile.services_on(host)
    release = offline_release(profile, host)
    memory = release.facts.memory_mb
    size = f"{_gb(memory)} RAM" + (" (stack.yaml: memory_mb)" if host.memory_mb else
                                   " at least (the smallest that carries its services)")
    size += f", {host.arch}" if host.arch else ", amd64 or arm64"
    ssh = f"ssh {'-p ' + str(host.port) + ' ' if host.port != 22 else ''}"
    if host.ssh_key:
        ssh += f"-i {group.folder / host.ssh_key} "
    ssh += f"{host.user}@{host.address}"
    ports = [f"{p.port}/{p.proto} {p.why}" for p in firewall_ports(profile, host)]
    return HostSection(
        name=host.name,
        address=host.address,
        ssh=ssh,
        role=host.role,
        size=size,
        services=[SERVICE_NAMES[s] for s in sorted(services, key=list(SERVICE_NAMES).index)],
        underneath=[layer(name).summary for name in layers_on(profile, host) if name in SHARED_LAYERS],
        ports=ports,
    )


def _gb(memory_mb: int) -> str:
    return f"{memory_mb / 1024:g} GB" if memory_mb % 512 == 0 else f"{memory_mb} MB"


def _sites(profile: StackProfile) -> list[Site]:
    hostnames = profile.hostnames()
    purposes = {
        "nextcloud": "Files, calendars and contacts: open it in a browser; Nextcloud's desktop and phone "
        "apps sync with it (give them this address).",
        "matrix": f"The Matrix homeserver: people chat with a Matrix app (Element or another) signed in as "
        f"@NAME:{profile.server_name}; not a page to browse.",
        "discourse": "The forum: open it in a browser.",
    }
    sites = [Site(f"https://{name}", purposes[service], profile.host_of(service).name)
             for service, name in hostnames.items()]
    if "matrix" in hostnames and profile.server_name != hostnames["matrix"]:
        sites.append(Site(
            f"https://{profile.server_name}/.well-known/matrix/",
            f"Tells Matrix apps and other servers that {profile.server_name}'s homeserver is at "
            f"{hostnames['matrix']}.",
            profile.host_of("matrix").name,
        ))
    return sites


def _logins(group: Group, profile: StackProfile) -> list[Login]:
    secrets = group.secrets_file.name
    hostnames = profile.hostnames()
    logins = []
    if profile.nextcloud.enabled:
        logins.append(Login("Nextcloud", f"https://{hostnames['nextcloud']}", NEXTCLOUD_ADMIN,
                            f"`nextcloud_admin_password` in {secrets}"))
    if profile.matrix.enabled:
        logins.append(Login("Matrix", f"any Matrix app, homeserver https://{hostnames['matrix']}",
                            f"@{MATRIX_ADMIN}:{profile.server_name}", f"`matrix_admin_password` in {secrets}"))
    if profile.discourse.enabled:
        logins.append(Login("Discourse", f"https://{hostnames['discourse']}", profile.admin_email,
                            "chosen at sign-up: the account that signs up with this address becomes admin"))
    keys = "a key of `admin.ssh_keys` in stack.yaml" if profile.admin.ssh_keys else "no key yet: add `admin.ssh_keys` to stack.yaml"
    logins.append(Login("The servers", "SSH to any host (see Hosts), with sudo", profile.admin.user, keys))
    return logins


def _backups(group: Group, profile: StackProfile) -> list[str]:
    lines = []
    if profile.backup.enabled and profile.backup.repository:
        retention = profile.backup.retention
        lines.append(f"restic repository: {_without_password(profile.backup.repository)}")
        lines.append(f"schedule: {profile.backup.schedule} (systemd OnCalendar); kept: {retention.daily} daily, "
                     f"{retention.weekly} weekly, {retention.monthly} monthly")
        lines.append(f"the repository's password is restic_password in {group.secrets_file}: keep a copy of that "
                     "file outside the servers (a password manager), or the backups cannot be read")
    else:
        lines.append("No backups are set up yet: set backup.enabled and backup.repository in stack.yaml "
                     f"(e.g. sftp:user@host:/srv/restic), then `commonstack deploy {group.name}`.")
    lines.append(f"{group.secrets_file} itself is on the volunteer's machine only: keep a copy somewhere safe.")
    return lines


def _without_password(repository: str) -> str:
    """rest:https://user:PASSWORD@host/ -> rest:https://user:********@host/"""
    return re.sub(r"(//[^/:@]+:)[^@/]+@", r"\1********@", repository)


def _tasks(name: str, profile: StackProfile) -> list[Task]:
    return [
        Task("Check that everything works (after every change and upgrade)", f"commonstack check {name}",
             "each failure says what to look at; the result is saved for this runbook"),
        Task("See what a deploy would change", f"commonstack plan {name}"),
        Task("Apply stack.yaml to the servers", f"commonstack deploy {name}", "asks before changing anything"),
        Task("Back up now", f"commonstack backup {name}"),
        Task("List the backups", f"commonstack backups {name}"),
        Task("Restore a backup", f"commonstack restore {name} --snapshot ID --host HOST",
             f"ID from `commonstack backups {name}`; `--host HOST` for one host only"),
        Task("See which upgrades are waiting", f"commonstack upgrade {name} --list"),
        Task("Upgrade", f"commonstack upgrade {name}",
             "backs up first, checks after, and rolls back if the checks fail"),
        Task("Update this runbook", f"commonstack runbook {name}"),
    ]


def _versions(profile: StackProfile) -> list[tuple[str, str]]:
    pinned = versions()
    found = [("commonstack", _kit_version())]
    if profile.matrix.enabled:
        found.append(("Synapse", f"{pinned.synapse.version} (PyPI, wheel hash pinned)"))
    if profile.nextcloud.enabled:
        found.append(("Nextcloud", f"{pinned.nextcloud.version} (signed release, sha256 and GPG verified)"))
    if profile.discourse.enabled:
        found.append(("Discourse", f"discourse_docker at commit {pinned.discourse_docker.commit[:12]}"))
    for codename, debian in pinned.debian.items():
        tools = [f"PostgreSQL {debian.postgresql}"] + ([f"PHP {debian.php}"] if profile.nextcloud.enabled else [])
        found.append((f"Debian {codename}", ", ".join(tools) + " (Debian's packages, with security updates)"))
    return found


def _notes(profile: StackProfile) -> list[str]:
    notes = []
    left_out = [s for s in preset_services(profile.preset) if s not in profile.enabled_services()] if profile.preset else []
    if left_out:
        notes.append(f"Left out of the {profile.preset} preset: {', '.join(left_out)} (stack.yaml says why).")
    if profile.offline:
        notes.append("The profile says offline: true: services whose release must be downloaded are refused.")
    if profile.smtp is None:
        notes.append("No outgoing email (no smtp in stack.yaml): no notifications or password resets by mail.")
    else:
        notes.append(f"Mail goes out through {profile.smtp.host}:{profile.smtp.port}"
                     f" as {profile.smtp.from_address or 'noreply@' + profile.domain}.")
    return notes


def _kit_version() -> str:
    try:
        return version("commonstack")
    except PackageNotFoundError:
        return "unknown"


@cache
def _environment(form: str) -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=form == "html",
    )
    # In Markdown tables a '|' ends a cell and a newline the row.
    environment.filters["cell"] = lambda text: " ".join(str(text).split()).replace("|", "\\|")
    environment.filters["inline"] = _inline_code if form == "html" else str
    return environment


def _inline_code(text: str) -> Markup:
    """HTML of a sentence written for Markdown: `commands` become <code>, everything else escaped."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))
