"""Where a group's hosts are reached: one SSH target per declared host, its key pinned."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from commonstack.errors import GroupError
from commonstack.inventories.groups import Group
from commonstack.stacks.model import StackProfile


@dataclass(frozen=True)
class HostTarget:
    """How the deploys and the checks reach a host: the same identity and pinned key for both."""

    name: str
    address: str
    user: str = "root"
    port: int = 22
    key_path: Path | None = None
    known_hosts: Path | None = None
    # Host data read by the deploy functions through pyinfra's ``host.data``.
    data: dict = field(default_factory=dict, hash=False)


def host_targets(group: Group, profile: StackProfile, limit: tuple[str, ...] = ()) -> list[HostTarget]:
    """SSH targets of the group's hosts (all, or those named in `limit`)."""
    names = [h.name for h in profile.hosts]
    unknown = [name for name in limit if name not in names]
    if unknown:
        raise GroupError(f"--host {unknown[0]}: no such host in {group.stack_file} (hosts: {', '.join(names)})")
    if not group.known_hosts.is_file():
        raise GroupError(
            f"{group.known_hosts}: no pinned host keys yet; run `commonstack pin-keys {group.name}` "
            "and compare the fingerprints with your provider's console"
        )
    return [
        HostTarget(
            name=h.name,
            address=h.address,
            user=h.user,
            port=h.port,
            key_path=(group.folder / h.ssh_key) if h.ssh_key else None,
            known_hosts=group.known_hosts,
            data={"group_folder": str(group.folder.resolve())},  # relative profile paths start here
        )
        for h in profile.hosts
        if not limit or h.name in limit
    ]
