"""A group's offline plan: every host sized and its configs rendered, before any SSH."""

from __future__ import annotations

from collections.abc import Mapping

from commonstack.errors import ProfileError
from commonstack.inventories.groups import Group
from commonstack.rendering import ConfigFile, HostPlan, Release, plan_host
from commonstack.formats import UnsafeValue
from commonstack.stacks.certificates import MAX_BYTES, NotCertificates, ca_certificates
from commonstack.stacks.model import Host, StackProfile
from commonstack.stacks.reading import ReadError, read_text
from commonstack.stacks.sizing import HostTooSmall, UnsupportedArchitecture

CA_FOLDER = "/usr/local/share/ca-certificates/commonstack"
ACME_ROOT = "/etc/caddy/acme-ca-root.pem"


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
        plan.files.append(ConfigFile(layer="ca-certificates", path=f"{CA_FOLDER}/extra-{number}.crt", content=pem))
    if profile.tls.acme_ca_root and "caddy" in plan.layers:
        pem = _read_pem(group, profile.tls.acme_ca_root, "tls.acme_ca_root")
        plan.files.append(ConfigFile(layer="caddy", path=ACME_ROOT, content=pem))
    return plan


def _read_pem(group: Group, path, key: str) -> str:
    """The certificates of a PEM file in the group's folder (the profile's grammar keeps the path
    inside it; a link out of it is refused before it is followed to a file)."""
    full = group.folder / path
    try:
        inside = full.resolve().is_relative_to(group.folder.resolve())
    except (OSError, RuntimeError):  # a loop of links (RuntimeError before Python 3.13)
        raise ProfileError(group.stack_file, f"{full}: a loop of symbolic links", key=key) from None
    if not inside:
        raise ProfileError(group.stack_file, f"{path} leads outside the group's folder {group.folder}; "
                           "copy the certificate into that folder", key=key)
    try:
        return ca_certificates(read_text(full, limit=MAX_BYTES))
    except (ReadError, NotCertificates) as exc:
        raise ProfileError(group.stack_file, f"{full}: {exc}", key=key) from None
