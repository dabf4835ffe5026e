"""What the memory benchmarks share: per-service RSS/PSS of a test host, and the sizing model."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from commonstack.testhosts import cgroups

KIB = 1024


def processes(name: str, service_of: Callable[[int], str | None]) -> dict[str, dict[str, float]]:
    """Per service of test host `name`: process count, sum of RSS and of PSS in MiB
    (/proc/PID/smaps_rollup: shared pages such as PostgreSQL's buffers count once in PSS)."""
    found: dict[str, dict[str, float]] = defaultdict(lambda: {"count": 0, "rss": 0.0, "pss": 0.0})
    for pid in cgroups.pids(name):
        try:
            service = service_of(pid)
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text() if service else ""
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if service is None:
            continue
        fields = {line.split(":")[0]: int(line.split()[1]) for line in rollup.splitlines()[1:] if line.split()[1:2]}
        found[service]["count"] += 1
        found[service]["rss"] += fields.get("Rss", 0) / KIB
        found[service]["pss"] += fields.get("Pss", 0) / KIB
    return found


def sizing_model(inventories: Path, group_name: str = "bench") -> tuple[dict, dict]:
    """The sized values and modelled footprints of the host, as `commonstack render` plans them offline."""
    from commonstack.inventories.groups import Group
    from commonstack.inventories.secrets import redacted
    from commonstack.plan import plan_group
    from commonstack.stacks.sizing import memory_footprint_mb

    group = Group(group_name, inventories)
    profile = group.load()
    plan = plan_group(group, profile, redacted(profile))[0]
    return plan.sizing.__dict__, memory_footprint_mb(plan.sizing, profile.services_on(plan.host))
