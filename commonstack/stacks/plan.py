"""A group's offline plan: every host sized and its configs rendered, before any SSH."""

from __future__ import annotations

from collections.abc import Mapping

from commonstack.errors import ProfileError
from commonstack.inventories.groups import Group
from commonstack.rendering import HostPlan, Release, plan_host
from commonstack.stacks.model import StackProfile
from commonstack.stacks.sizing import HostTooSmall, UnsupportedArchitecture


def plan_group(
    group: Group,
    profile: StackProfile,
    secrets: Mapping[str, str],
    releases: Mapping[str, Release] | None = None,
) -> list[HostPlan]:
    """Plan every host; `releases` carries real facts when a deploy has gathered them."""
    plans = []
    for index, host in enumerate(profile.hosts):
        try:
            plans.append(plan_host(profile, host, secrets, (releases or {}).get(host.name)))
        except (HostTooSmall, UnsupportedArchitecture) as exc:
            raise ProfileError(group.stack_file, str(exc), key=f"hosts[{index}] ({host.name})") from None
    return plans
