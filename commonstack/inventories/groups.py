"""Group folders: inventories/GROUP/ holds stack.yaml, secrets.yaml and known_hosts."""

from __future__ import annotations

import hashlib
import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import TypeAdapter, ValidationError

from commonstack.errors import GroupError, ProfileError
from commonstack.inventories.secrets import ensure_secrets, read_secrets, require_provided
from commonstack.stacks import values
from commonstack.stacks.loader import load_preset, load_profile
from commonstack.stacks.model import Port as PortType
from commonstack.stacks.model import StackProfile
from commonstack.stacks.reading import excerpt

Port = TypeAdapter(PortType)

_GROUP_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")
# [NAME=][USER@]ADDRESS[:PORT]; an IPv6 address with a port goes in brackets: [2001:db8::7]:2222.
_HOST_RE = re.compile(
    r"(?:(?P<name>[^=@]*)=)?(?:(?P<user>[^=@]*)@)?"
    r"(?:\[(?P<bracketed>[0-9A-Fa-f:.]+)\]|(?P<address>[^=@\[\]:]+|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*))"
    r"(?::(?P<port>\d{1,5}))?"
)


def state_home() -> Path:
    """What the kit learns on this machine ($XDG_STATE_HOME/commonstack, ~/.local/state/commonstack)."""
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "commonstack"


def inventories_root() -> Path:
    return Path(os.environ.get("COMMONSTACK_INVENTORIES", "inventories"))


@dataclass(frozen=True)
class Group:
    name: str
    root: Path

    @property
    def folder(self) -> Path:
        return self.root / self.name

    @property
    def stack_file(self) -> Path:
        return self.folder / "stack.yaml"

    @property
    def secrets_file(self) -> Path:
        return self.folder / "secrets.yaml"

    @property
    def known_hosts(self) -> Path:
        return self.folder / "known_hosts"

    @property
    def state_folder(self) -> Path:
        """What the kit learns about the group on this machine (the last check, the commands that
        read each host's facts), out of the group's folder, which only `init` and `deploy` write."""
        folder = hashlib.sha256(str(self.folder.resolve()).encode()).hexdigest()[:12]
        return state_home() / "groups" / f"{self.name}-{folder}"

    @property
    def last_check_file(self) -> Path:
        """The last health check's results (no secrets), for the runbook."""
        return self.state_folder / "last-check.json"

    def load(self) -> StackProfile:
        if not self.stack_file.exists():
            raise GroupError(
                f"{self.stack_file}: no such group profile; create it with "
                f"`commonstack init {self.name} --preset small-group --domain example.org --host root@ADDRESS`"
            )
        return load_profile(self.stack_file)


def group(name: str, root: Path | None = None) -> Group:
    if not _GROUP_RE.fullmatch(name):
        raise GroupError(
            f"{name!r} is not a group name: use lowercase letters, digits and '-', starting with a letter"
        )
    return Group(name, root or inventories_root())


def parse_host(spec: str, default_name: str) -> dict:
    """'[NAME=][USER@]ADDRESS[:PORT]' -> a hosts entry of stack.yaml, each part checked as the
    profile checks it (so `Server=root@...` is a bad host name, not the user 'Server=root')."""
    usage = "expected [NAME=][USER@]ADDRESS[:PORT], e.g. vps=root@203.0.113.7"
    match = _HOST_RE.fullmatch(spec.strip())
    if not match:
        raise GroupError(f"--host {excerpt(spec)}: {usage}")
    entry: dict = {"name": default_name if match["name"] is None else match["name"],
                   "address": match["bracketed"] or match["address"]}
    if match["user"] is not None:
        entry["user"] = match["user"]
    if match["port"]:
        entry["port"] = int(match["port"])
    checks = {"name": values.slug, "user": values.unix_user, "address": values.address, "port": Port.validate_python}
    for part, check in checks.items():
        if part in entry:
            try:
                entry[part] = check(entry[part])
            except (ValueError, ValidationError) as exc:
                why = "expected a port number 1-65535" if part == "port" else str(exc)
                raise GroupError(f"--host {excerpt(spec)}: the host's {part}: {why}") from None
    return entry


def required_host_names(preset: str) -> list[str]:
    """Host names a preset places services on (e.g. split: home, vps)."""
    profile = load_preset(preset).profile
    return sorted({s["host"] for s in profile.values() if isinstance(s, dict) and s.get("host")})


# Services that cannot work without outgoing email, and why (said by init and in stack.yaml).
NEEDS_EMAIL = {"discourse": "Discourse signs people up, confirms addresses and resets passwords by email"}

# init's options for the profile keys they set: an invalid value is blamed on the option.
INIT_OPTIONS = {
    "preset": "--preset",
    "domain": "--domain",
    "admin_email": "--admin-email",
    "hosts": "--host",
    "smtp.host": "--smtp-host",
    "smtp.port": "--smtp-port",
    "smtp.username": "--smtp-user",
    "smtp.from_address": "--smtp-from",
}


def preset_services(preset: str) -> list[str]:
    """The services a preset enables, e.g. ['nextcloud', 'matrix']."""
    profile = load_preset(preset).profile
    return [s for s, settings in profile.items() if isinstance(settings, dict) and settings.get("enabled")]


def services_needing_email(preset: str) -> list[str]:
    return [s for s in preset_services(preset) if s in NEEDS_EMAIL]


def stack_document(
    name: str,
    preset: str,
    domain: str,
    admin_email: str,
    hosts: list[dict],
    smtp: dict | None = None,
    left_out: dict[str, str] | None = None,
) -> str:
    """The text of a new stack.yaml: the group's choices, and pointers to what can be overridden.

    `left_out`: {service: why} of the preset's services this group does not run; each is written
    disabled, under a comment saying why.
    """
    choices = {"preset": preset, "group": name, "domain": domain, "admin_email": admin_email, "hosts": hosts}
    if smtp:
        choices["smtp"] = smtp
    body = yaml.safe_dump(choices, sort_keys=False)
    if smtp and smtp.get("username"):
        body += "# The SMTP password is in secrets.yaml (smtp_password), never here.\n"
    for service, why in (left_out or {}).items():
        body += commented(why) + yaml.safe_dump({service: {"enabled": False}}, sort_keys=False)
    description = load_preset(preset).description
    return (
        f"# Stack profile of the group '{name}'. Preset {preset}: {description}\n"
        "# Any key of the preset can be overridden here (see `commonstack schema`), e.g.\n"
        "#   matrix:\n#     registration: token\n"
        f"{body}"
    )


def commented(text: str) -> str:
    """Text as YAML comment lines of a readable width."""
    return "".join(f"# {line}\n" for line in textwrap.wrap(" ".join(text.split()), 96))


def create_group(group: Group, document: str, given_secrets: dict[str, str] | None = None) -> StackProfile:
    """Write a new (or --force replaced) group from the text of its stack.yaml, with its secrets.

    The text is validated before anything is written, and an error names init's option for the
    key at fault (never a file that does not exist). If writing fails half-way, what this call
    created is removed again: a failed init leaves no folder and no draft behind. Existing
    secrets are kept.
    """
    try:
        profile = load_profile(group.stack_file, text=document)
    except ProfileError as exc:
        raise GroupError(_blame_option(exc)) from None
    require_provided(group.secrets_file, profile, {**read_secrets(group.secrets_file), **(given_secrets or {})})
    created_folder = not group.folder.exists()
    had_secrets = group.secrets_file.exists()
    draft = group.folder / f".{group.stack_file.name}.new"
    try:
        group.folder.mkdir(parents=True, exist_ok=True)
        ensure_secrets(group.secrets_file, profile, given_secrets)
        draft.write_text(document)
        draft.replace(group.stack_file)
    except BaseException:
        draft.unlink(missing_ok=True)
        if not had_secrets:
            group.secrets_file.unlink(missing_ok=True)
        if created_folder and group.folder.exists() and not any(group.folder.iterdir()):
            group.folder.rmdir()
        raise
    return profile


def _blame_option(error: ProfileError) -> str:
    """'--domain: expected a DNS name ...' for a key init set from an option or a prompt."""
    key = error.key or ""
    for prefix, option in INIT_OPTIONS.items():
        if key == prefix or key.startswith((f"{prefix}.", f"{prefix}[")):
            return f"{option}: {error.message}"
    return f"{key}: {error.message}" if key else error.message
