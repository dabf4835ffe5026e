"""Group folders: inventories/GROUP/ holds stack.yaml, secrets.yaml and known_hosts."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from commonstack.errors import GroupError
from commonstack.stacks.loader import load_preset, load_profile
from commonstack.stacks.model import StackProfile

_GROUP_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_HOST_RE = re.compile(r"^(?:(?P<name>[a-z][a-z0-9-]*)=)?(?:(?P<user>[^@\s]+)@)?(?P<address>[^@:\s]+)(?::(?P<port>\d+))?$")


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
        if not self.stack_file.is_file():
            raise GroupError(
                f"{self.stack_file}: no such group profile; create it with "
                f"`commonstack init {self.name} --preset small-group --domain example.org --host root@ADDRESS`"
            )
        return load_profile(self.stack_file)


def group(name: str, root: Path | None = None) -> Group:
    if not _GROUP_RE.match(name):
        raise GroupError(
            f"{name!r} is not a group name: use lowercase letters, digits and '-', starting with a letter"
        )
    return Group(name, root or inventories_root())


def parse_host(spec: str, default_name: str) -> dict:
    """'[NAME=][USER@]ADDRESS[:PORT]' -> a hosts entry of stack.yaml."""
    match = _HOST_RE.match(spec.strip())
    if not match:
        raise GroupError(f"--host {spec!r}: expected [NAME=][USER@]ADDRESS[:PORT], e.g. vps=root@203.0.113.7")
    entry = {"name": match["name"] or default_name, "address": match["address"]}
    if match["user"]:
        entry["user"] = match["user"]
    if match["port"]:
        entry["port"] = int(match["port"])
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
