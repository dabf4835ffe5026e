"""A host's snapshots: restic's listing with each snapshot's manifest (what it holds, from which
versions) and size, and what the kit can restore of them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from commonstack.backups.remote import HostShell
from commonstack.errors import CommonstackError
from commonstack.plan import kit_version
from commonstack.stacks.version_numbers import numeric
from commonstack.stacks.versions import versions

DEBIAN_ORDER = ("bookworm", "trixie")  # a dump of a newer PostgreSQL never loads into an older one


@dataclass(frozen=True)
class Snapshot:
    id: str
    time: datetime
    host: str
    tags: tuple[str, ...]
    manifest: dict
    size: int
    files: int

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def kind(self) -> str:
        return next((t for t in self.tags if t != "commonstack"), "routine")

    @property
    def layers(self) -> list[str]:
        return list(self.manifest.get("layers", []))

    def age(self, now: datetime | None = None) -> str:
        seconds = ((now or datetime.now(timezone.utc)) - self.time).total_seconds()
        for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
            if seconds >= length:
                return f"{seconds / length:.0f} {unit}"
        return f"{seconds:.0f} s"

    def versions_line(self) -> str:
        """Synapse 1.163.2 (schema 93), Nextcloud 32.0.2, ... on Debian bookworm amd64, kit 0.1.0."""
        found = self.manifest.get("versions", {})
        parts = []
        if "synapse" in found:
            parts.append(f"Synapse {found['synapse'].get('version')} (schema {found['synapse'].get('schema')})")
        if "nextcloud" in found:
            parts.append(f"Nextcloud {found['nextcloud'].get('versionstring')}")
        if "discourse" in found:
            parts.append(f"Discourse {str(found['discourse'].get('commit', ''))[:12]}")
        if "postgres" in found:
            parts.append(f"PostgreSQL {str(found['postgres'].get('version', '')).split()[0]}")
        debian = self.manifest.get("debian", {})
        parts.append(f"Debian {debian.get('codename')} {debian.get('arch')}, kit {self.manifest.get('kit')}")
        return ", ".join(parts)


def restic_time(text: str) -> datetime:
    """restic's timestamps carry nanoseconds, which datetime does not take."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00"))


def host_snapshots(shell: HostShell, host: str) -> list[Snapshot]:
    """The host's snapshots, oldest first, each with its manifest (the host keeps them cached)."""
    listing = json.loads(shell.script(host, "snapshots").stdout or "[]")
    if not listing:
        return []
    described = {}
    for line in shell.script(host, "describe", *[item["id"] for item in listing]).stdout.splitlines():
        entry = json.loads(line)
        described[entry["id"]] = entry
    return sorted(
        (
            Snapshot(
                id=item["id"],
                time=restic_time(item["time"]),
                host=item["hostname"],
                tags=tuple(item.get("tags") or ()),
                manifest=described[item["id"]]["manifest"],
                size=described[item["id"]]["size"],
                files=described[item["id"]]["files"],
            )
            for item in listing
        ),
        key=lambda s: s.time,
    )


def choose(snapshots: list[Snapshot], reference: str | None, host: str, group: str) -> Snapshot:
    """The snapshot `reference` names (an ID or its beginning), or the latest routine one."""
    if reference:
        found = [s for s in snapshots if s.id.startswith(reference.lower())]
        if len(found) != 1:
            what = "matches several snapshots" if found else "is no snapshot"
            raise CommonstackError(
                f"--snapshot {reference} {what} of host {host} in the repository: `commonstack backups {group}` lists them"
            )
        return found[0]
    routine = [s for s in snapshots if s.kind == "routine"] or snapshots
    if not routine:
        raise CommonstackError(f"host {host} has no snapshot in the repository yet: `commonstack backup {group}` makes one")
    return routine[-1]


def refusal(snapshot: Snapshot, codename: str) -> str | None:
    """Why this kit cannot restore the snapshot onto a host of Debian `codename` (None: it can)."""
    manifest, pins = snapshot.manifest, versions()
    if manifest.get("format") != 1:
        return f"snapshot {snapshot.short_id} has a manifest this kit does not know (format {manifest.get('format')})"
    made_by = str(manifest.get("kit", "0"))
    if numeric(made_by) > numeric(kit_version()):
        return f"snapshot {snapshot.short_id} was made by commonstack {made_by}, newer than this one ({kit_version()}): update the kit first"
    recorded = manifest.get("versions", {})
    newer = []
    if "synapse" in recorded and numeric(str(recorded["synapse"].get("version"))) > numeric(pins.synapse.version):
        newer.append(f"Synapse {recorded['synapse']['version']} (this kit installs {pins.synapse.version})")
    if "nextcloud" in recorded and numeric(str(recorded["nextcloud"].get("versionstring"))) > numeric(pins.nextcloud.version):
        newer.append(f"Nextcloud {recorded['nextcloud']['versionstring']} (this kit installs {pins.nextcloud.version})")
    if newer:
        return (
            f"snapshot {snapshot.short_id} holds data of {' and '.join(newer)}: its databases cannot go back to an "
            "older version; update the kit (git pull) and restore again. Nothing was changed"
        )
    source = manifest.get("debian", {}).get("codename")
    if source in DEBIAN_ORDER and codename in DEBIAN_ORDER and DEBIAN_ORDER.index(source) > DEBIAN_ORDER.index(codename):
        return (
            f"snapshot {snapshot.short_id} comes from Debian {source}, and this host runs {codename}: its PostgreSQL "
            f"cannot read the newer dumps; restore onto a Debian {source} host. Nothing was changed"
        )
    return None
