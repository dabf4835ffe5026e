"""`commonstack try`: a preset on throwaway local Debian hosts, written as the group 'try'."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from commonstack.inventories.groups import Group, commented, required_host_names
from commonstack.stacks.layers import layer
from commonstack.stacks.loader import deep_merge, load_preset
from commonstack.stacks.model import StackProfile
from commonstack.stacks.sizing import minimum_memory_mb

TRY_GROUP = "try"
TRY_DOMAIN = "try.test"  # .test is reserved (RFC 2606): these names never reach the internet


@dataclass(frozen=True)
class TrialHost:
    """One host of the trial: its name in the profile, its test host, and its RAM."""

    name: str
    testhost: str
    memory_mb: int


def trial_hosts(preset: str, memory_mb: int | None = None, name: str = TRY_GROUP) -> list[TrialHost]:
    """The hosts a preset needs, each sized as the smallest host that carries its services.

    Their test hosts are named after the trial: NAME, or NAME-HOST when the preset has several.
    """
    names = required_host_names(preset) or ["server"]
    profile = StackProfile.model_validate(deep_merge(load_preset(preset).profile, _base(names)))
    return [
        TrialHost(
            name=host.name,
            testhost=name if len(names) == 1 else f"{name}-{host.name}",
            memory_mb=memory_mb or minimum_memory_mb(profile.services_on(host), "amd64"),
        )
        for host in profile.hosts
    ]


def write_try_group(
    root: Path,
    preset: str,
    hosts: list[tuple[TrialHost, object]],
    name: str = TRY_GROUP,
    overrides: dict | None = None,
    left_out: dict[str, str] | None = None,
) -> Group:
    """Write inventories/NAME/ for running test hosts (TrialHost, TestHost); secrets are kept.

    `left_out`: {service: why} of the preset's services the test hosts cannot get (their source is
    unreachable): each is written disabled under a comment saying why, so that the group says
    what was deployed and `plan`, `deploy` and `check` work on it as on any group. The
    integration tests use this too, with their own group names and profile overrides.
    """
    group = Group(name, root)
    group.folder.mkdir(parents=True, exist_ok=True)
    entries = [
        {
            "name": trial.name,
            "address": testhost.address,
            "user": testhost.user,
            "ssh_key": str(testhost.key_path),
            "memory_mb": trial.memory_mb,
            "role": f"local test host '{testhost.name}' (commonstack hosts list)",
        }
        for trial, testhost in hosts
    ]
    document = deep_merge(_base([t.name for t, _ in hosts]), {"preset": preset, "group": name, "hosts": entries})
    document = deep_merge(document, overrides or {})
    document = deep_merge(document, {service: {"enabled": False} for service in left_out or {}})
    text = "# Written by `commonstack try`: a throwaway group on local test hosts.\n"
    for key, value in document.items():
        if key in (left_out or {}):
            text += commented(f"{key} is left out: {left_out[key]}")
        text += yaml.safe_dump({key: value}, sort_keys=False)
    group.stack_file.write_text(text)
    # The keys come from the test hosts' own files, not from the network: pinning them is safe.
    from commonstack.testhosts import known_hosts_line

    group.known_hosts.write_text("".join(known_hosts_line(testhost) + "\n" for _, testhost in hosts))
    group.known_hosts.chmod(0o600)
    return group


def services_left_out(unavailable: dict[str, dict[str, str]], profile: StackProfile) -> dict[str, str]:
    """{service: why} from a plan's {host: {layer: why}} of layers whose source is unreachable."""
    services = profile.enabled_services()
    return {
        service: why
        for reasons in unavailable.values()
        for name, why in reasons.items()
        if (service := layer(name).service) in services
    }


def _base(names: list[str]) -> dict:
    return {
        "group": TRY_GROUP,
        "domain": TRY_DOMAIN,
        "admin_email": f"admin@{TRY_DOMAIN}",
        "hosts": [{"name": name, "address": "pending"} for name in names],
        "tls": {"mode": "internal"},  # no public ACME CA can reach a local host
        "smtp": {"host": f"smtp.{TRY_DOMAIN}"},  # presets with Discourse need one; nothing is sent
    }
