"""Synapse's upgrade steps (commonstack/upgrades.py runs them, see deploys/upgrade.py).

1. prepare, while the old release keeps running: the new release in a virtualenv of its own,
   /opt/synapse/venv-NEW (the installer checks the wheel's pinned hash);
2. apply (the downtime): Synapse stopped, its database dumped and its config saved (what a
   rollback restores), /opt/synapse/venv pointed at the new release in one rename, Synapse
   started -- it migrates its database before it says it is ready (upstream: "Upgrading
   between Synapse Versions"), so the start may take long: its start timeout is lifted for it;
3. rollback: Synapse stopped, the database restored from the dump (the migrated one set aside),
   the config put back, /opt/synapse/venv pointed at the old release, Synapse started.

Synapse refuses to start on a database newer than it knows (its schema compat version), which is
why a rollback always restores the dump: old code never meets the migrated database.
"""

from __future__ import annotations

from dataclasses import replace

from commonstack.deploys.configs import put_configs
from commonstack.deploys.synapse import INSTALLER, NoSynapseWheel, point_venv_at, release_folder, wheel_sha256
from commonstack.deploys.synapse import installed_version  # noqa: F401  (the registry reads it here)
from pyinfra import host

from commonstack.deploys.upgrade import (
    UnitActive,
    UpgradeContext,
    aside_database,
    config_restored,
    databases_restored,
    dumped,
    manual_restore,
)
from commonstack.plan import HostPlan
from commonstack.stacks.paths import SYNAPSE_VENV

SERVICE = "matrix-synapse"
# A runtime drop-in (gone at the next boot) that lets the first start take its migrations' time.
START_TIMEOUT = f"/run/systemd/system/{SERVICE}.service.d/50-commonstack-upgrade.conf"


def source_problem(plan: HostPlan, version: str) -> str | None:
    """Why the release cannot be installed here (None: it can: PyPI, hash-checked)."""
    try:
        wheel_sha256(version, plan.release.facts.arch)
    except NoSynapseWheel as exc:
        return str(exc)
    return None


def leftovers(ctx: UpgradeContext) -> dict[str, list[str]]:
    return {
        "leftovers.finished": [release_folder(ctx.from_version)],
        "leftovers.rolled-back": [release_folder(ctx.to_version)],
        "leftovers.abandoned": [release_folder(ctx.to_version)],
        "databases.rolled-back": [aside_database("synapse", ctx.id)],
    }


def started() -> str:
    """Start Synapse and wait until it says it is ready (after its migrations)."""
    folder = START_TIMEOUT.rsplit("/", 1)[0]
    return (
        f"mkdir -p {folder} && printf '[Service]\\nTimeoutStartSec=30min\\n' > {START_TIMEOUT} "
        f"&& systemctl daemon-reload; status=0; systemctl start {SERVICE} || status=$?; "
        f"rm -f {START_TIMEOUT}; systemctl daemon-reload; exit $status"
    )


def prepare(ctx: UpgradeContext) -> None:
    if "prepared" in ctx.done:
        return
    installer = [f for f in ctx.plan.files_of("synapse") if f.path == INSTALLER]
    put_configs(replace(ctx.plan, files=installer), "synapse")  # this kit's installer, with its arguments
    sha256 = wheel_sha256(ctx.to_version, ctx.plan.release.facts.arch)
    ctx.step(
        "prepared",
        f"{INSTALLER} {ctx.to_version} {sha256}",
        f"Install Synapse {ctx.to_version} into {release_folder(ctx.to_version)} (Synapse {ctx.from_version} "
        "keeps running)",
    )


def apply(ctx: UpgradeContext) -> None:
    ctx.step("stopped", f"systemctl stop {SERVICE}", "Stop Synapse: the downtime starts")
    dumped(ctx)
    ctx.step("switched", point_venv_at(ctx.to_version), f"Point {SYNAPSE_VENV} at Synapse {ctx.to_version}")
    ctx.step("started", started(), f"Start Synapse {ctx.to_version}: it migrates its database, then answers")


def rollback(ctx: UpgradeContext) -> None:
    ctx.step("rollback-stopped", f"systemctl stop {SERVICE}", "Stop Synapse")
    databases_restored(ctx)
    config_restored(ctx)
    ctx.step(
        "switched-back", point_venv_at(ctx.from_version), f"Point {SYNAPSE_VENV} back at Synapse {ctx.from_version}"
    )
    ctx.step("rollback-started", started(), f"Start Synapse {ctx.from_version}")


def down_reason() -> str | None:
    """Why Synapse does not serve (None: it runs)."""
    if host.get_fact(UnitActive, unit=SERVICE):
        return None
    return f"Synapse is not running on {host.name}: `journalctl -u {SERVICE} -n 50` says why"


def manual_rollback(ctx: UpgradeContext) -> list[str]:
    return [
        f"systemctl stop {SERVICE}",
        *manual_restore(ctx),
        f"ln -sfn venv-{ctx.from_version} {SYNAPSE_VENV}",
        f"systemctl start {SERVICE} && curl -fsS http://127.0.0.1:8008/health",
    ]
