"""A group's offline plan: every host sized and its configs rendered, before any SSH."""

from __future__ import annotations

from collections.abc import Mapping

from commonstack.errors import ProfileError
from commonstack.inventories.groups import Group
from commonstack.rendering import ConfigFile, HostPlan, Release, plan_host
from commonstack.stacks.model import Host, StackProfile
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
    """A PEM file named in the profile, relative to the group's folder."""
    full = group.folder / path
    try:
        text = full.read_text()
    except OSError as exc:
        raise ProfileError(group.stack_file, f"cannot read {full}: {exc.strerror}", key=key) from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ProfileError(group.stack_file, f"{full} is not a PEM certificate", key=key)
    return text
