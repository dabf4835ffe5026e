"""Discourse's upgrade steps (commonstack/upgrades.py runs them, see deploys/upgrade.py): the
official launcher (discourse_docker) at its new pinned commit, then `./launcher rebuild app`.

1. prepare, while the forum keeps serving: the new commit fetched into /var/discourse (not
   checked out yet), and Discourse's own backup (`discourse backup` in the container: its
   database and uploads in one archive), kept in the upgrade's folder: the forum's database
   lives inside the container, so this archive is what a rollback restores;
2. apply: containers/ saved; the new commit checked out (detached); `./launcher rebuild app`,
   which pulls the new base image while the old container still serves, then stops it and
   starts the new one (Discourse migrates its database as it starts);
3. rollback: the old commit and containers/ back, rebuilt, and the backup restored into it
   (`discourse restore`: Discourse refuses a backup newer than its code, which this is not).

Neither github.com nor Docker Hub is reachable where the kit's tests run: these steps were run
there only as far as the stand-in launcher of tests/integration/test_discourse.py goes.
"""

from __future__ import annotations

import shlex

from pyinfra import host

from commonstack.deploys.discourse import DockerContainer, RepositoryAnswers, build_stamp, discourse_docker_source
from commonstack.deploys.discourse import installed_version  # noqa: F401  (the registry reads it here)
from commonstack.deploys.preflight import SourceUnavailable, require_upstream
from commonstack.deploys.upgrade import UpgradeContext, config_restored, dumped
from commonstack.plan import HostPlan
from commonstack.stacks.paths import DISCOURSE_APP_YML, DISCOURSE_BACKUPS, DISCOURSE_BUILD_STAMP, DISCOURSE_CONTAINER
from commonstack.stacks.paths import DISCOURSE_DIR as LAUNCHER

EXPORT = "discourse-backup.tar.gz"  # in the upgrade's folder


def source_problem(plan: HostPlan, commit: str) -> str | None:
    """Why the launcher's commit cannot be fetched here (None: it can)."""
    source = discourse_docker_source(plan.profile.discourse)
    try:
        if not source.overridden:
            require_upstream(plan, "discourse", f"{source.repository} and Docker Hub")
    except SourceUnavailable as refusal:
        return str(refusal)
    if not host.get_fact(RepositoryAnswers, repository=source.repository):
        return f"the host cannot reach {source.repository} (and a rebuild needs Docker Hub too)"
    return None


def leftovers(ctx: UpgradeContext) -> dict[str, list[str]]:
    return {}  # one checkout holds every commit; the backup archive goes with the upgrade's folder


def _checked_out(commit: str) -> str:
    git = f"git -C {LAUNCHER}"
    return f"{git} -c advice.detachedHead=false checkout -q --force --detach {shlex.quote(commit)}"


def _rebuilt(ctx: UpgradeContext, commit: str) -> str:
    app_yml = next(f.content for f in ctx.plan.files if f.path == DISCOURSE_APP_YML)
    stamp = build_stamp(commit, app_yml)
    return (
        f"cd {LAUNCHER} && ./launcher rebuild {DISCOURSE_CONTAINER} && "
        f"install -m 600 /dev/null {DISCOURSE_BUILD_STAMP} && printf '%s\\n' {shlex.quote(stamp)} > {DISCOURSE_BUILD_STAMP}"
    )


def prepare(ctx: UpgradeContext) -> None:
    git, commit = f"git -C {LAUNCHER}", shlex.quote(ctx.to_version)
    ctx.step(
        "prepared",
        f"{git} cat-file -e {commit}^{{commit}} 2>/dev/null || {git} fetch -q origin {commit} || {git} fetch -q origin",
        f"Fetch discourse_docker {ctx.to_version[:12]} (the forum keeps serving)",
    )
    ctx.step(
        "exported",
        f"docker exec {DISCOURSE_CONTAINER} discourse backup >&2 && "
        f"newest=$(find {DISCOURSE_BACKUPS} -maxdepth 1 -name '*.tar.gz' -printf '%T@ %p\\n' | sort -n | tail -n 1 "
        f"| cut -d' ' -f2-) && cp \"$newest\" {ctx.folder}/{EXPORT}",
        "Discourse's own backup of the forum (database and uploads), kept for a rollback",
    )


def apply(ctx: UpgradeContext) -> None:
    dumped(ctx)
    ctx.step("checked-out", _checked_out(ctx.to_version), f"Check out discourse_docker {ctx.to_version[:12]}")
    ctx.step("rebuilt", _rebuilt(ctx, ctx.to_version),
             f"./launcher rebuild {DISCOURSE_CONTAINER}: the downtime is the swap of containers at its end")  # fmt: skip


def rollback(ctx: UpgradeContext) -> None:
    ctx.step("checked-out-back", _checked_out(ctx.from_version), f"Check out discourse_docker {ctx.from_version[:12]}")
    config_restored(ctx)
    ctx.step("rebuilt-back", _rebuilt(ctx, ctx.from_version), f"./launcher rebuild {DISCOURSE_CONTAINER}")
    ctx.step(
        "restored",
        f"if [ -f {ctx.folder}/{EXPORT} ]; then cp {ctx.folder}/{EXPORT} {DISCOURSE_BACKUPS}/commonstack-rollback.tar.gz "
        f"&& docker exec {DISCOURSE_CONTAINER} discourse enable_restore && "
        f"docker exec {DISCOURSE_CONTAINER} discourse restore commonstack-rollback.tar.gz && "
        f"docker exec {DISCOURSE_CONTAINER} discourse disable_restore; fi",
        "Restore the forum from Discourse's own backup taken before the upgrade",
    )


def down_reason() -> str | None:
    state = host.get_fact(DockerContainer, container=DISCOURSE_CONTAINER)
    if state == "running":
        return None
    return f"the forum's container is {state or 'not there'} on {host.name}: `cd {LAUNCHER} && ./launcher logs app`"


def manual_rollback(ctx: UpgradeContext) -> list[str]:
    return [
        _checked_out(ctx.from_version),
        f"tar -C / -xpf {ctx.folder}/saved.tar",
        f"cd {LAUNCHER} && ./launcher rebuild {DISCOURSE_CONTAINER}",
        f"cp {ctx.folder}/{EXPORT} {DISCOURSE_BACKUPS}/ && docker exec {DISCOURSE_CONTAINER} discourse enable_restore "
        f"&& docker exec {DISCOURSE_CONTAINER} discourse restore {EXPORT}",
    ]
