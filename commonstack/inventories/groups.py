"""Group folders: inventories/GROUP/ holds stack.yaml, secrets.yaml and known_hosts."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from pydantic import TypeAdapter, ValidationError

from commonstack.errors import GroupError
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


def stack_document(name: str, preset: str, domain: str, admin_email: str, hosts: list[dict]) -> str:
    """The text of a new stack.yaml: the group's choices, and pointers to what can be overridden."""
    body = yaml.safe_dump(
        {"preset": preset, "group": name, "domain": domain, "admin_email": admin_email, "hosts": hosts},
        sort_keys=False,
    )
    description = load_preset(preset).description
    return (
        f"# Stack profile of the group '{name}'. Preset {preset}: {description}\n"
        "# Any key of the preset can be overridden here (see `commonstack schema`), e.g.\n"
        "#   matrix:\n#     registration: token\n"
        f"{body}"
    )
