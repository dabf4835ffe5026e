"""Nextcloud's upgrade steps (commonstack/upgrades.py runs them, see deploys/upgrade.py), after
the admin manual's "Upgrade manually":

1. prepare, while the old release keeps serving: the new release fetched (or copied from
   nextcloud.archive), its sha256 and GPG signature verified, unpacked beside the running one
   in /var/www/nextcloud-NEW (the deploy's own unpack script);
2. apply (the downtime): maintenance mode on and the background jobs stopped; the database
   dumped and config/ saved (what a rollback restores); config.php and the apps the group added
   copied into the new release, which takes the old one's place (/var/www/nextcloud-OLD keeps
   the old); `occ upgrade`, then the missing indices, columns and primary keys; maintenance
   mode off and the background jobs back;
3. rollback: background jobs stopped, the database restored from the dump (the upgraded one set
   aside), the old release back in place (the failed one kept beside it), config/ put back,
   maintenance mode off.

Nextcloud forbids downgrades and skipping a major; the preflight (commonstack/upgrades.py)
refuses both before any change. Maintenance mode is on from the first apply step until the last
one (or the rollback's last); the upgrade's verdict says so whenever it is left on.
"""

from __future__ import annotations

from dataclasses import replace
from io import BytesIO

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.operations import files

from commonstack.deploys.configs import put_configs
from commonstack.deploys.nextcloud import KEYRING, OCC, UNPACK, ReleaseVersion, nextcloud_code, release_source
from commonstack.deploys.nextcloud import installed_version  # noqa: F401  (the registry reads it here)
from commonstack.deploys.nextcloud_app_source import require_app_compatibility
from commonstack.deploys.nextcloud_source import (
    pinned_release,
    release_keyring,
    require_php_compatibility,
)
from commonstack.deploys.upgrade import (
    UpgradeContext,
    aside_database,
    config_restored,
    databases_restored,
    dumped,
    manual_restore,
)
from commonstack.errors import CommonstackError
from commonstack.plan import HostPlan
from commonstack.stacks.paths import NEXTCLOUD_CODE as CODE_DIR
from commonstack.stacks.paths import NEXTCLOUD_WEB_USER as WEB_USER

OCC_LINE = "cd / && " + " ".join(OCC)
CRON_TIMER = "nextcloud-cron.timer"
# Background jobs stop; one that runs is let finish (maintenance mode makes cron.php return).
JOBS_STOPPED = f"systemctl stop {CRON_TIMER} && while systemctl is-active -q nextcloud-cron.service; do sleep 2; done"
VERSION_OF = "version_of() { grep -o \"OC_VersionString = '[^']*'\" \"$1/version.php\" 2>/dev/null | cut -d\"'\" -f2; }"


def beside(version: str) -> str:
    """Where a release waits beside the running one (before it runs, or after it ran)."""
    return f"{CODE_DIR}-{version}"


def failed(ctx: UpgradeContext) -> str:
    """Where a rollback keeps the release that failed."""
    return f"{beside(ctx.to_version)}.failed-{ctx.id.rsplit('-', 1)[-1]}"


def source_problem(plan: HostPlan, version: str) -> str | None:
    """Why the release cannot be installed here (None: it can): its source, key, PHP."""
    try:
        release = pinned_release(version)
        require_php_compatibility(release, plan.release.codename)
        for app in plan.profile.nextcloud.apps:  # the group's apps must suit the new major too
            require_app_compatibility(app, release.major)
        release_source(plan, release)
        release_keyring(release)
    except CommonstackError as exc:
        return str(exc)
    return None


def leftovers(ctx: UpgradeContext) -> dict[str, list[str]]:
    return {
        "leftovers.finished": [beside(ctx.from_version)],
        "leftovers.rolled-back": [failed(ctx), beside(ctx.to_version)],
        "leftovers.abandoned": [beside(ctx.to_version)],
        "databases.rolled-back": [aside_database("nextcloud", ctx.id)],
    }


def _php_reloaded(ctx: UpgradeContext) -> str:
    """A graceful reload empties OPcache, which would serve the other release's files for a while."""
    return f"systemctl reload php{ctx.plan.php_version}-fpm"


def prepare(ctx: UpgradeContext) -> None:
    if "prepared" in ctx.done:
        return
    release = pinned_release(ctx.to_version)
    target = beside(ctx.to_version)
    unpack = [f for f in ctx.plan.files_of("nextcloud") if f.path == UNPACK]
    put_configs(replace(ctx.plan, files=unpack), "nextcloud")
    files.put(name="Nextcloud's release signing key (pinned)", src=BytesIO(release_keyring(release)), dest=KEYRING,
              mode="0644")  # fmt: skip
    waiting = host.get_fact(ReleaseVersion, path=target)
    if waiting is not None and waiting != ctx.to_version:  # a stray folder, not this release
        files.directory(name=f"Remove {target}, which holds another release", path=target, present=False)
    nextcloud_code(
        name=f"Nextcloud {release.version}: fetch, verify (sha256, GPG) and unpack into {target} "
        f"(Nextcloud {ctx.from_version} keeps serving)",
        release=release,
        installed_version=waiting,
        archive=release_source(ctx.plan, release),
        target=target,
    )
    ctx.step("prepared", f"test -f {target}/version.php", f"Nextcloud {ctx.to_version} is ready in {target}")


def apply(ctx: UpgradeContext) -> None:
    new, old = beside(ctx.to_version), beside(ctx.from_version)
    ctx.step(
        "maintenance-on",
        f"{OCC_LINE} maintenance:mode --on && {JOBS_STOPPED}",
        "Maintenance mode on, background jobs stopped: the downtime starts",
    )
    dumped(ctx)
    ctx.step(
        "switched",
        # Into the new release go config.php (and any *.config.php) and the apps the group added from
        # the app store (those the old release did not ship, core/shipped.json), as the admin manual
        # says; the old release keeps everything of its own.
        f"umask 022; {VERSION_OF}; if [ \"$(version_of {CODE_DIR})\" != {ctx.to_version} ]; then "
        f"if [ -d {CODE_DIR} ]; then mkdir -p {new}/config && for f in {CODE_DIR}/config/*; do "
        f"[ \"$(basename \"$f\")\" = config.sample.php ] || cp -a \"$f\" {new}/config/ || exit 1; done; "
        f"rm -f {new}/config/CAN_INSTALL; "
        f"for app in {CODE_DIR}/apps/*/ {CODE_DIR}/custom_apps/*/; do [ -d \"$app\" ] || continue; "
        f"a=$(basename \"$app\"); where=$(basename \"$(dirname \"$app\")\"); "
        f"if [ -e {new}/$where/$a ] || grep -qs \"\\\"$a\\\"\" {CODE_DIR}/core/shipped.json; then continue; fi; "
        f"mkdir -p {new}/$where && cp -a \"$app\" {new}/$where/ || exit 1; done; "
        f"chown -R {WEB_USER}:{WEB_USER} {new}; "
        f"if [ -e {old} ]; then mv -T {old} {old}.before-$(date +%s); fi; mv -T {CODE_DIR} {old}; fi; "
        f"mv -T {new} {CODE_DIR}; fi; {_php_reloaded(ctx)}",
        f"Put Nextcloud {ctx.to_version} in place ({ctx.from_version} kept in {old})",
    )
    ctx.step(
        "migrated",
        f"{OCC_LINE} upgrade --no-interaction && {OCC_LINE} db:add-missing-indices --no-interaction && "
        f"{OCC_LINE} db:add-missing-columns --no-interaction && {OCC_LINE} db:add-missing-primary-keys --no-interaction",
        "occ upgrade (the database migrates), then the missing indices, columns and primary keys",
    )
    ctx.step(
        "maintenance-off",
        f"{OCC_LINE} maintenance:mode --off && systemctl start {CRON_TIMER}",
        "Maintenance mode off, background jobs back",
    )


def rollback(ctx: UpgradeContext) -> None:
    old = beside(ctx.from_version)
    ctx.step("rollback-stopped", JOBS_STOPPED, "Stop Nextcloud's background jobs")
    databases_restored(ctx)
    ctx.step(
        "switched-back",
        f"{VERSION_OF}; if [ \"$(version_of {CODE_DIR})\" != {ctx.from_version} ] && [ -d {old} ]; then "
        f"if [ -e {CODE_DIR} ]; then mv -T {CODE_DIR} {failed(ctx)}; fi; mv -T {old} {CODE_DIR}; fi; "
        f"{_php_reloaded(ctx)}",
        f"Put Nextcloud {ctx.from_version} back in place (the failed {ctx.to_version} kept in {failed(ctx)})",
    )
    config_restored(ctx)
    ctx.step(
        "rollback-maintenance-off",
        f"{OCC_LINE} maintenance:mode --off && systemctl start {CRON_TIMER}",
        "Maintenance mode off, background jobs back",
    )


class MaintenanceMode(FactBase[bool]):
    """Whether config.php puts Nextcloud in maintenance mode."""

    def command(self) -> str:
        return f"grep -qs \"'maintenance' => true\" {CODE_DIR}/config/config.php && echo yes || echo no"

    def default(self) -> bool:
        return False

    def process(self, output) -> bool:
        return "".join(output).strip() == "yes"


def down_reason() -> str | None:
    """Why Nextcloud does not serve its users (None: it does, as far as maintenance mode goes)."""
    if not host.get_fact(MaintenanceMode):
        return None
    return (
        f"Nextcloud on {host.name} is in maintenance mode: its users see a maintenance page until "
        f"`sudo -u {WEB_USER} php {CODE_DIR}/occ maintenance:mode --off`"
    )


def manual_rollback(ctx: UpgradeContext) -> list[str]:
    old = beside(ctx.from_version)
    return [
        f"systemctl stop {CRON_TIMER}",
        *manual_restore(ctx),
        f"mv -T {CODE_DIR} {failed(ctx)} && mv -T {old} {CODE_DIR}   # if {old} is there",
        f"tar -C / -xpf {ctx.folder}/saved.tar",
        f"systemctl reload php{ctx.plan.php_version}-fpm",
        f"{OCC_LINE} maintenance:mode --off && systemctl start {CRON_TIMER}",
    ]
