"""Discourse on a real test host, as far as this network allows, through the real CLI.

github.com and Docker Hub are unreachable here, and no test may send traffic towards them, so:

1. An unreachable repository fails `plan` and `deploy` before any change. The repository is
   https://127.0.0.1:9/ *on the test host* (the profile's discourse.launcher.repository): a
   refused connection stands in for github.com being out of reach, and no packet leaves the host.
2. The prerequisites (discourse.install: prerequisites: swap file, Docker from Debian's mirror,
   app.yml, besides the base and Caddy layers) are deployed, checked, and a second deploy
   changes nothing.
3. With a STAND-IN for discourse_docker -- a local bare repository on the test host whose
   `launcher` only records its calls and runs a placeholder container (the host's /bin/sleep);
   it serves no forum -- `plan` shows the clone and the rebuild, and the real checkout, rebuild
   condition, stamp and start steps run: a second deploy changes nothing, a changed app.yml
   rebuilds, a new pinned commit is left to `commonstack upgrade` (whose pre-upgrade backup the
   stand-in cannot make: nothing is upgraded). The checks that need a real forum fail, as they must.
4. The full install, from github.com and Docker Hub, runs only with COMMONSTACK_NETWORK_TESTS=1
   (where the test host can reach them); it is skipped here with that reason.

Docker in a systemd-nspawn test host: dockerd runs as it is (overlay2 on the host's ext4, cgroupfs
driver, cgroup v1), but no container starts: nspawn mounts the cgroup controllers read-only and
its seccomp filter refuses keyctl, which runc needs for the container's session keyring. Steps 3
and 4 lift both, for the test host only: nspawn is started with SYSTEMD_SECCOMP=0, and inside the
host each controller hierarchy is mounted again, writable (the host's cgroup namespace confines
it to its own subtree). Nothing of this is part of a deploy.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from commonstack import testhosts
from commonstack.deploys.discourse import LAUNCHER_KEY
from commonstack.stacks.paths import MAINTENANCE_HOLDER
from tests.integration.conftest import new_host_name
from tests.integration.stacks import check_results, cli, failed_checks, write_group

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NETWORK_ENV = "COMMONSTACK_NETWORK_TESTS"
GROUP = "forum"
STAND_IN = "/srv/stand-in/discourse_docker.git"
NOT_BUILT = "Discourse is not built here"
# The checks of a forum the stand-in cannot provide: it runs a placeholder, not Discourse.
NEEDS_A_REAL_FORUM = {
    "discourse listens on its socket",
    "discourse answers through https",
    "the container sends mail through the relay",
}

STAND_IN_LAUNCHER = r"""#!/usr/bin/env bash
# STAND-IN for discourse_docker's launcher, written by tests/integration/test_discourse.py.
# The real launcher pulls discourse/base from Docker Hub and builds Discourse from github.com,
# neither reachable where the tests run. This one records each call and runs a placeholder
# container under the config's name (the host's own /bin/sleep): it serves no forum.
set -euo pipefail
cd "$(dirname "$0")"
echo "$*" >> stand-in-calls.log
image=commonstack-stand-in/placeholder
case "${1:-}" in
  rebuild)
    docker rm -f "$2" >/dev/null 2>&1 || true
    if ! docker image inspect "$image" >/dev/null 2>&1; then
      tar -ch /bin/sleep $(ldd /bin/sleep | grep -o '/[^ ]*') 2>/dev/null | docker import - "$image" >/dev/null
    fi
    docker run -d --name "$2" --restart=always "$image" /bin/sleep infinity >/dev/null ;;
  start)
    docker start "$2" >/dev/null ;;
  *)
    echo "stand-in launcher: '${1:-}' is not imitated" >&2; exit 1 ;;
esac
"""

# Each controller hierarchy mounted again, writable, over nspawn's read-only one (test hosts only).
WRITABLE_CGROUPS = (
    "for c in $(ls /sys/fs/cgroup); do case $c in systemd|unified) continue;; esac; "
    "mkdir -p /run/test-cgroup-$c; mountpoint -q /run/test-cgroup-$c && continue; "
    "mount -t cgroup -o $c cgroup /run/test-cgroup-$c && mount --bind /run/test-cgroup-$c /sys/fs/cgroup/$c "
    "|| exit 1; done"
)


def network_tests() -> bool:
    return os.environ.get(NETWORK_ENV, "").strip() in ("1", "yes", "true")


def up_with_containers(memory: str) -> testhosts.TestHost:
    """A test host whose nspawn has no seccomp filter (runc needs keyctl)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SYSTEMD_SECCOMP", "0")  # read by systemd-nspawn, which inherits our environment
        return testhosts.up(new_host_name(), memory=memory)


def allow_containers(host, ssh) -> None:
    """Writable cgroup controllers in the test host; skips where nspawn kept its seccomp filter."""
    if ssh(host, "grep -q '^Seccomp:[[:space:]]*0' /proc/1/status").returncode != 0:
        pytest.skip("systemd-nspawn kept its seccomp filter (SYSTEMD_SECCOMP=0 not honoured): no container can start")
    result = ssh(host, WRITABLE_CGROUPS)
    assert result.returncode == 0, f"cannot make the cgroup controllers writable: {result.stderr}"


@pytest.fixture(scope="module")
def server(testhosts_state: Path):
    host = up_with_containers("2G")
    yield host
    testhosts.down(host.name)


@pytest.fixture(scope="module")
def forum(server, tmp_path_factory) -> Path:
    """inventories/ with the group 'forum' (preset forum, SMTP relay smtp.try.test) on the host."""
    inventories = tmp_path_factory.mktemp("inventories")
    write_group(inventories, GROUP, "forum", {"server": server})
    return inventories


def configure(forum: Path, server: testhosts.TestHost, smtp: dict | None = None, **discourse) -> None:
    """Rewrite the group's profile with these discourse settings (launcher, install) and SMTP."""
    overrides = {"discourse": discourse, "smtp": smtp or {}}
    write_group(forum, GROUP, "forum", {"server": server}, overrides=overrides)


def host_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("server ["))


def planned(output: str) -> list[str]:
    """The names of the operations a plan would change, without their layer prefix."""
    section = output.split("Health checks:")[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ") and not line.startswith("      ")]


def outcomes(results: list[dict], layer: str) -> dict[str, str]:
    return {r["check"]: r["outcome"] for r in results if r["layer"] == layer}


# --- 1. no source, no change -------------------------------------------------------------------


def test_an_unreachable_repository_fails_plan_and_deploy_before_any_change(server, forum, testhost_ssh):
    unreachable = "https://127.0.0.1:9/discourse_docker.git"
    configure(forum, server, launcher={"repository": unreachable})
    plan = cli(forum, "plan", GROUP)
    assert plan.returncode == 1, plan.stdout + plan.stderr
    expected = f"SourceUnavailable: discourse: the host cannot reach {unreachable} ({LAUNCHER_KEY} in stack.yaml)"
    assert expected in host_line(plan.stdout), plan.stdout

    attempt = cli(forum, "deploy", GROUP, "--yes")
    assert attempt.returncode == 1, attempt.stdout + attempt.stderr
    assert "Nothing was deployed: no host could be reached or planned." in attempt.stdout, attempt.stdout
    untouched = testhost_ssh(
        server, "for p in /swapfile /etc/nftables.conf /var/lib/commonstack /var/discourse /usr/bin/docker; "
        "do test -e $p && echo $p; done; true"
    )
    assert untouched.stdout.split() == [], f"the refused deploy changed the host: {untouched.stdout}"


# --- 2. the prerequisites ----------------------------------------------------------------------


def test_prerequisites_are_deployed_and_checked(server, forum, testhost_ssh):
    configure(forum, server, install="prerequisites")
    first = cli(forum, "deploy", GROUP, "--yes")
    assert first.returncode == 0, first.stdout + first.stderr
    done = planned(first.stdout)
    assert "Base system | Swap file of 2048 MB" in done
    assert "Docker engine | Install Docker (Debian's docker.io), git and AppArmor's tools" in done
    assert "Discourse | Write /var/discourse/containers/app.yml" in done
    assert not any("Check out discourse_docker" in op or "launcher rebuild" in op for op in done)

    swap = testhost_ssh(server, "stat -c '%s %a' /swapfile; docker info --format '{{.Driver}} {{.LiveRestoreEnabled}}'")
    assert swap.stdout.split() == [str(2048 * 1024 * 1024), "600", "overlay2", "true"], swap.stdout + swap.stderr

    results = check_results(forum, GROUP)
    assert not failed_checks(results)
    assert outcomes(results, "docker")["docker engine runs"] == "passed"
    discourse = outcomes(results, "discourse")
    assert discourse["app yml is private and names the mail relay"] == "passed"
    skipped = [r for r in results if r["layer"] == "discourse" and r["outcome"] == "skipped"]
    assert len(skipped) == 5 and all(r["message"].startswith(NOT_BUILT) for r in skipped), skipped

    again = cli(forum, "plan", GROUP)
    assert re.search(r": unchanged — 0 of \d+ operations would change", host_line(again.stdout)), again.stdout


# --- 3. the stand-in -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stand_in(server, testhost_ssh, tmp_path_factory) -> dict:
    """A bare repository with two commits, on the test host at STAND_IN: {source, commits}."""
    if not shutil.which("git"):
        pytest.skip("git is not installed here (apt-get install git)")
    work = tmp_path_factory.mktemp("stand-in")
    git = ["git", "-C", str(work), "-c", "user.name=commonstack tests", "-c", "user.email=tests@try.test"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    (work / "launcher").write_text(STAND_IN_LAUNCHER)
    (work / "launcher").chmod(0o755)
    (work / ".gitignore").write_text("containers/*\nshared/*\ncids/*\nstand-in-calls.log\n")
    (work / "README").write_text("A stand-in for discourse_docker: see tests/integration/test_discourse.py.\n")
    commits = []
    for number in (1, 2):
        (work / "VERSION").write_text(f"stand-in {number}\n")
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", f"stand-in {number}"], check=True)
        commits.append(subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip())
    bare = tmp_path_factory.mktemp("bare") / "discourse_docker.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(bare, arcname=".")
    payload = base64.b64encode(archive.getvalue()).decode()
    copied = testhost_ssh(server, f"mkdir -p {STAND_IN} && echo {payload} | base64 -d | tar -xz -C {STAND_IN}")
    assert copied.returncode == 0, copied.stderr
    return {"source": f"file://{STAND_IN}", "commits": commits}


def use_stand_in(forum: Path, server, stand_in: dict, commit: int = 0, smtp: dict | None = None) -> None:
    """The profile points discourse.launcher at the stand-in, at one of its commits."""
    configure(forum, server, smtp, launcher={"repository": stand_in["source"], "commit": stand_in["commits"][commit]})


def test_plan_shows_the_clone_and_the_rebuild(server, forum, stand_in):
    use_stand_in(forum, server, stand_in)
    plan = cli(forum, "plan", GROUP)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert planned(plan.stdout) == [
        f"Discourse | Check out discourse_docker {stand_in['commits'][0][:12]} in /var/discourse",
        "Discourse | Build and start the Discourse container (./launcher rebuild app)",
    ], plan.stdout


def test_the_stand_in_build_converges_and_rebuilds_only_on_change(server, forum, stand_in, testhost_ssh):
    allow_containers(server, testhost_ssh)
    use_stand_in(forum, server, stand_in)
    first = cli(forum, "deploy", GROUP, "--yes")
    assert first.returncode == 0, first.stdout + first.stderr
    state = testhost_ssh(
        server,
        "git -C /var/discourse rev-parse HEAD; git -C /var/discourse symbolic-ref -q HEAD || echo detached; "
        "cat /var/discourse/stand-in-calls.log; docker inspect --format '{{.State.Status}}' app",
    )
    assert state.stdout.split() == [stand_in["commits"][0], "detached", "rebuild", "app", "running"], state.stdout

    results = check_results(forum, GROUP)
    failing = {r["check"] for r in results if r["outcome"] == "failed"}
    assert failing == NEEDS_A_REAL_FORUM, failed_checks(results)
    discourse = outcomes(results, "discourse")
    assert discourse["discourse docker is pinned and built from"] == discourse["discourse container runs"] == "passed"

    unchanged = cli(forum, "plan", GROUP)
    assert re.search(r": unchanged — 0 of \d+ operations would change", host_line(unchanged.stdout)), unchanged.stdout

    # A stopped container is started, not rebuilt.
    testhost_ssh(server, "docker stop app")
    restart = cli(forum, "plan", GROUP)
    assert planned(restart.stdout) == ["Discourse | Discourse container running"], restart.stdout

    # app.yml changes (the address mail is sent from): rewrite it and rebuild; the checkout stays.
    sender = {"from_address": "forum@try.test"}
    use_stand_in(forum, server, stand_in, smtp=sender)
    changed = cli(forum, "plan", GROUP)
    assert planned(changed.stdout) == [
        "Discourse | Write /var/discourse/containers/app.yml",
        "Discourse | Build and start the Discourse container (./launcher rebuild app)",
    ], changed.stdout

    # A new pinned commit: the running forum keeps its launcher (the deploy says an upgrade is
    # pending); app.yml's change is rebuilt at the commit that runs.
    use_stand_in(forum, server, stand_in, commit=1, smtp=sender)
    repinned = cli(forum, "deploy", GROUP, "--yes")
    assert repinned.returncode == 0, repinned.stdout + repinned.stderr
    assert planned(repinned.stdout.split("changed — ")[-1]) == [
        "Discourse | Write /var/discourse/containers/app.yml",
        "Discourse | Build and start the Discourse container (./launcher rebuild app)",
    ], repinned.stdout
    old, new = stand_in["commits"][0][:12], stand_in["commits"][1][:12]
    assert f"server: discourse {old} runs and the profile asks for {new}: the deploy keeps {old}" in repinned.stdout
    calls = testhost_ssh(server, "cat /var/discourse/stand-in-calls.log; git -C /var/discourse rev-parse HEAD")
    assert calls.stdout.split() == ["rebuild", "app", "rebuild", "app", stand_in["commits"][0]], calls.stdout
    final = cli(forum, "plan", GROUP)
    assert re.search(r": unchanged — 0 of \d+ operations would change", host_line(final.stdout)), final.stdout

    # The upgrade takes Discourse's own backup first; the stand-in's container cannot make one (it
    # runs no Discourse), and a failed backup means nothing is upgraded. (--force: the checks of a
    # real forum fail on the stand-in, as they must.)
    upgraded = cli(forum, "upgrade", GROUP, "--only", "discourse", "--force", "-y")
    assert upgraded.returncode == 1, upgraded.stdout + upgraded.stderr
    assert "server: discourse NOT UPGRADED" in upgraded.stdout, upgraded.stdout
    assert "nothing of the running discourse was changed" in upgraded.stdout, upgraded.stdout
    calls = testhost_ssh(server, "cat /var/discourse/stand-in-calls.log; git -C /var/discourse rev-parse HEAD")
    assert calls.stdout.split() == ["rebuild", "app", "rebuild", "app", stand_in["commits"][0]], calls.stdout
    records = testhost_ssh(server, "ls /var/lib/commonstack/upgrades; cat /var/lib/commonstack/upgrades/history/*/journal")
    assert "abandoned" in records.stdout, records.stdout
    held = testhost_ssh(server, f"systemctl is-active -q {MAINTENANCE_HOLDER}")
    assert held.returncode != 0, "the maintenance lock stayed held"


# --- 4. the real thing -----------------------------------------------------------------------------


@pytest.mark.skipif(
    not network_tests(),
    reason=f"github.com and Docker Hub are unreachable here: set {NETWORK_ENV}=1 where the test host can "
    "reach them (the first build takes 10-20 minutes, 4 GB of RAM and 10 GB of disk)",
)
def test_the_full_install_from_github_and_docker_hub(testhosts_state, testhost_ssh, tmp_path_factory):
    host = up_with_containers("4G")  # no swap inside a container: RAM instead, for the asset build
    try:
        allow_containers(host, testhost_ssh)
        inventories = tmp_path_factory.mktemp("inventories")
        write_group(inventories, GROUP, "forum", {"server": host}, memory_mb=4096)
        deployed = cli(inventories, "deploy", GROUP, "--yes", timeout=3600)
        assert deployed.returncode == 0, deployed.stdout[-4000:] + deployed.stderr[-2000:]
        results = check_results(inventories, GROUP)
        assert not failed_checks(results)
        assert set(outcomes(results, "discourse").values()) == {"passed"}, outcomes(results, "discourse")
        again = cli(inventories, "plan", GROUP)
        assert re.search(r": unchanged — 0 of \d+ operations would change", host_line(again.stdout)), again.stdout
    finally:
        testhosts.down(host.name)
