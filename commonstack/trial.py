"""`commonstack try`: a preset on throwaway local Debian hosts, written as the group 'try'."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from commonstack.inventories.groups import Group, required_host_names
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


def trial_hosts(preset: str, memory_mb: int | None = None) -> list[TrialHost]:
    """The hosts a preset needs, each sized as the smallest host that carries its services."""
    names = required_host_names(preset) or ["server"]
    profile = StackProfile.model_validate(deep_merge(load_preset(preset).profile, _base(names)))
    return [
        TrialHost(
            name=host.name,
            testhost=TRY_GROUP if len(names) == 1 else f"{TRY_GROUP}-{host.name}",
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
) -> Group:
    """Write inventories/NAME/ for running test hosts (TrialHost, TestHost); secrets are kept.

    The integration tests use it too, with their own group names and profile overrides.
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
    group.stack_file.write_text(
        "# Written by `commonstack try`: a throwaway group on local test hosts.\n"
        + yaml.safe_dump(document, sort_keys=False)
    )
    # The keys come from the test hosts' own files, not from the network: pinning them is safe.
    from commonstack.testhosts import known_hosts_line

    group.known_hosts.write_text("".join(known_hosts_line(testhost) + "\n" for _, testhost in hosts))
    group.known_hosts.chmod(0o600)
    return group


def _base(names: list[str]) -> dict:
    return {
        "group": TRY_GROUP,
        "domain": TRY_DOMAIN,
        "admin_email": f"admin@{TRY_DOMAIN}",
        "hosts": [{"name": name, "address": "pending"} for name in names],
        "tls": {"mode": "internal"},  # no public ACME CA can reach a local host
        "smtp": {"host": f"smtp.{TRY_DOMAIN}"},  # presets with Discourse need one; nothing is sent
    }
