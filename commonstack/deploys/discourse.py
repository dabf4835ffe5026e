"""Discourse through the official discourse_docker launcher, behind the shared Caddy.

What the deploy does, in order:

1. Preflight, while the operations are planned (stack.py runs it before any layer adds an
   operation, so a refusal fails `commonstack plan` too and nothing changes on the host):
   RAM >= 1 GB; 2 GB of swap at <= 2 GB of RAM (the base layer makes the swap file from
   sizing.swap_mb, which is 2048 on Discourse hosts up to 4 GB); free disk on /var (10 GB before
   the first build, the launcher's own 5 GB before a rebuild); amd64 (arm64 works and is
   experimental upstream: a warning in the rebuild step's name); SMTP settings; a Docker engine of
   at least 20.10 if one is there already; and -- only when something must be fetched or built --
   that the discourse_docker repository answers from the host (`git ls-remote`, 20 s).
2. vm.swappiness = 10 (as discourse-setup does) and containers/app.yml (templates/discourse;
   0600: it holds the SMTP password). The Docker engine is a layer of its own (deploys/docker.py,
   Debian's docker.io) deployed before this one. None of this needs more than Debian's mirror.
3. discourse_docker in /var/discourse, checked out detached at the commit pinned in
   stacks/versions.yaml (detached: on a branch, `launcher rebuild` would update itself).
4. `./launcher rebuild app`, only when the container does not exist yet, or app.yml or the pinned
   commit differ from what the container was built from (a stamp in /var/lib/commonstack, written
   after a successful rebuild, so a failed one is retried); `./launcher start app` when the
   container exists but is stopped. A forum that runs keeps its commit: a newer pin is an upgrade
   (`commonstack upgrade`, with Discourse's own backup and a rollback), which the deploy announces.

The network: the clone needs the repository (github.com); the rebuild needs Docker Hub (the
discourse/base image, which the launcher pulls before it stops a running container) and
github.com (Discourse's code, cloned inside the container). A host that cannot reach the
repository fails the preflight (SourceUnavailable: `commonstack try` leaves the forum out).
The profile's ``discourse.launcher`` (a git URL or path the host can reach: a mirror of
discourse_docker, and a commit) overrides versions.yaml, and ``discourse.install: prerequisites``
deploys steps 1-2 only.
"""


from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from pyinfra import host
from pyinfra.api import FactBase, deploy, operation
from pyinfra.facts.files import FileContents
from pyinfra.operations import files, systemd

from commonstack.deploys.configs import changed, put_configs
from commonstack.deploys.docker import DockerEngine, engine_problem
from commonstack.deploys.preflight import SourceUnavailable, require_upstream
from commonstack.errors import CommonstackError
from commonstack.plan import HostPlan
from commonstack.stacks.model import DiscourseSettings, SmtpSettings
from commonstack.stacks.paths import DISCOURSE_APP_YML as APP_YML
from commonstack.stacks.paths import DISCOURSE_BUILD_STAMP as BUILD_STAMP
from commonstack.stacks.paths import DISCOURSE_CONTAINER as CONTAINER
from commonstack.stacks.paths import DISCOURSE_DIR, STATE_DIR
from commonstack.stacks.sizing import debian_arch, fits, size_class_gb
from commonstack.stacks.versions import versions

SYSCTL_CONF = "/etc/sysctl.d/30-commonstack-discourse.conf"
LAUNCHER_KEY = "discourse.launcher.repository"
UNREACHABLE = "the host cannot reach"

MIN_MEMORY_MB = 1024  # Discourse's minimum "with swap" (docs/INSTALL-cloud.md); MemTotal may be 10% below
SWAP_NEEDED_MB = 2048  # discourse-setup refuses to go on with less at <= 2 GB of RAM
DISK_FIRST_BUILD_MB = 10 * 1024  # INSTALL-cloud.md: 10 GB of disk; images, database and uploads grow
DISK_REBUILD_MB = 5 * 1024  # the launcher's own check before a bootstrap
PROBE_SECONDS = 20

class DiscoursePreflightError(CommonstackError):
    """The host cannot carry Discourse as planned; nothing has been changed on it."""


# --- what is deployed from where --------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """The discourse_docker repository and the commit checked out of it."""

    repository: str
    commit: str
    overridden: bool = False


def discourse_docker_source(settings: DiscourseSettings) -> Source:
    """versions.yaml's pin, or the profile's discourse.launcher overrides (a mirror)."""
    pinned, launcher = versions().discourse_docker, settings.launcher
    return Source(
        launcher.repository or pinned.repository,
        launcher.commit or pinned.commit,
        overridden=bool(launcher.repository or launcher.commit),
    )


def build_stamp(commit: str, app_yml: str) -> str:
    """What a container is built from: the discourse_docker commit and app.yml's digest."""
    return f"discourse_docker={commit} app.yml=sha256:{hashlib.sha256(app_yml.encode()).hexdigest()}"


def rebuild_reason(container: str | None, built: str | None, wanted: str) -> str | None:
    """Why `./launcher rebuild app` must run, or None. `container` is the container's state
    ("running", "exited"...), "absent", or None when Docker cannot be asked (not installed yet)."""
    if container in (None, "absent"):
        return "the container does not exist yet"
    if built != wanted:
        return "app.yml or the pinned discourse_docker commit changed since the last build"
    return None


# --- preflight ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForumHost:
    """What the preflight knows of the host (facts, and what this deploy is about to do)."""

    memory_mb: int
    arch: str
    swap_mb: int  # swap the host will have: the base layer's swap file (sizing.swap_mb) or more
    free_disk_mb: int | None = None  # on /var; None: not read
    docker: dict | None = None  # DockerEngine fact
    first_build: bool = True  # no Discourse container yet
    will_build: bool = True  # `./launcher rebuild app` is about to run
    source_reachable: bool | None = None  # None: not probed (nothing to fetch or build)


@dataclass(frozen=True)
class Verdict:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def preflight(
    forum: ForumHost, smtp: SmtpSettings | None, smtp_password: str | None, source: Source
) -> Verdict:
    """Every reason the host cannot carry Discourse (problems) or should be watched (warnings).

    Each problem is short and says what to do: they are joined into one line ("; ").
    """
    problems, warnings = [], []
    if not fits(forum.memory_mb, MIN_MEMORY_MB):
        problems.append(f"{forum.memory_mb} MB of RAM: Discourse needs 1 GB (and 2 GB of swap)")
    ram_class = size_class_gb(forum.memory_mb)
    if forum.swap_mb < SWAP_NEEDED_MB:
        if ram_class <= 2:
            problems.append(
                f"{forum.swap_mb} MB of swap at {forum.memory_mb} MB of RAM: Discourse needs 2 GB "
                "(drop the host's swap_mb sizing override)"
            )
        elif ram_class <= 4:
            warnings.append(f"only {forum.swap_mb} MB of swap: a rebuild may run out of memory")
    arch = debian_arch(forum.arch)
    if arch == "arm64":
        warnings.append("arm64 is experimental upstream")
    elif arch in ("armhf", "armel"):
        problems.append(f"32-bit ARM ({forum.arch}): Discourse runs on amd64 and arm64 only, so install a 64-bit OS")
    elif arch != "amd64":
        problems.append(f"architecture {forum.arch}: Discourse runs on amd64 and arm64 only")
    if smtp is None:
        problems.append("no mail relay: set smtp.host (and smtp.username) in stack.yaml, smtp_password in secrets.yaml")
    elif smtp.username and not smtp_password:
        problems.append("smtp.username is set but secrets.yaml has no smtp_password")
    elif smtp.username and ("\\" in smtp_password or "\n" in smtp_password or smtp_password != smtp_password.strip()):
        # The launcher reads app.yml's env values with `read` (no -r): backslashes and edge spaces are lost.
        problems.append(
            "smtp_password (secrets.yaml) has a backslash, line break or edge space that the launcher "
            "cannot pass on: choose another password"
        )
    docker = engine_problem(forum.docker)
    if docker:
        problems.append(docker)
    if forum.will_build and forum.free_disk_mb is not None:
        needed = DISK_FIRST_BUILD_MB if forum.first_build else DISK_REBUILD_MB
        if forum.free_disk_mb < needed:
            what = "the first build" if forum.first_build else "a rebuild"
            problems.append(
                f"{forum.free_disk_mb // 1024} GB free on /var, {what} needs {needed // 1024} GB "
                "(`./launcher cleanup` frees old images)"
            )
    if forum.source_reachable is False:
        if source.overridden:
            problems.append(f"{UNREACHABLE} {source.repository} ({LAUNCHER_KEY} in stack.yaml)")
        else:
            problems.append(
                f"{UNREACHABLE} {source.repository}: Discourse comes from github.com and Docker Hub, so let "
                f"the host reach them or set {LAUNCHER_KEY} to a mirror"
            )
    return Verdict(problems, warnings)


# --- facts ---------------------------------------------------------------------------------------


class GitCheckout(FactBase[dict | None]):
    """HEAD and origin of a git checkout, None when there is none (or no git yet)::

    {"head": "8e01602a...", "origin": "https://github.com/discourse/discourse_docker.git"}
    """

    def command(self, path: str) -> str:
        path = shlex.quote(path)
        return (
            f"if command -v git >/dev/null 2>&1 && [ -d {path}/.git ]; then "
            f"git -C {path} rev-parse --verify -q HEAD || echo -; "
            f"git -C {path} config --get remote.origin.url || echo -; fi; true"
        )

    def process(self, output) -> dict | None:
        lines = [line.strip() for line in output if line.strip()]
        if len(lines) < 2:
            return None
        head, origin = lines[:2]
        return {"head": None if head == "-" else head, "origin": None if origin == "-" else origin}


class DockerContainer(FactBase[str | None]):
    """A container's state ("running", "exited"...), "absent", or None when Docker is not
    installed or not running (it cannot be asked)."""

    def command(self, container: str) -> str:
        return (
            "if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then "
            f"docker container inspect --format '{{{{.State.Status}}}}' {shlex.quote(container)} 2>/dev/null "
            "|| echo absent; fi; true"
        )

    def process(self, output) -> str | None:
        lines = [line.strip() for line in output if line.strip()]
        return lines[0] if lines else None


class FreeDiskMb(FactBase[int | None]):
    """MB free for root on the filesystem holding `path` (None: df said nothing, not read)."""

    def command(self, path: str) -> str:
        return f"df -Pk {shlex.quote(path)} | awk 'NR == 2 {{print int($4 / 1024)}}'"

    def process(self, output) -> int | None:
        text = "".join(output).strip()
        return int(text) if text.isdigit() else None


class SwapTotalMb(FactBase[int]):
    """Swap in use on the host, in MB (a provider's swap partition counts too)."""

    def command(self) -> str:
        return "awk '/^SwapTotal:/ {print int($2 / 1024)}' /proc/meminfo"

    def default(self) -> int:
        return 0

    def process(self, output) -> int:
        text = "".join(output).strip()
        return int(text) if text.isdigit() else 0


class GitHasCommit(FactBase[bool]):
    """Whether a checkout has a commit already (then nothing is fetched)."""

    def command(self, path: str, commit: str) -> str:
        return (
            f"git -C {shlex.quote(path)} cat-file -e {shlex.quote(commit + '^{commit}')} 2>/dev/null "
            "&& echo yes || echo no"
        )

    def default(self) -> bool:
        return False

    def process(self, output) -> bool:
        return "".join(output).strip() == "yes"


def _has_commit(path: str, commit: str) -> bool:
    return host.get_fact(GitHasCommit, path=path, commit=commit)


class RepositoryAnswers(FactBase[bool]):
    """Whether a git repository answers from the host: `git ls-remote` with a timeout, or --
    before git is installed -- a TCP connection to its server (a directory for a local path)."""

    def command(self, repository: str) -> str:
        quoted = shlex.quote(repository)
        ls_remote = (
            f"GIT_TERMINAL_PROMPT=0 timeout {PROBE_SECONDS} git ls-remote {quoted} HEAD >/dev/null 2>&1"
        )
        return (
            f"if command -v git >/dev/null 2>&1; then {ls_remote} && echo yes || echo no; "
            f"else {_without_git(repository)} && echo yes || echo no; fi"
        )

    def default(self) -> bool:
        return False  # not None: the preflight reads None as "not probed"

    def process(self, output) -> bool:
        return "".join(output).strip() == "yes"


def _without_git(repository: str) -> str:
    scp_like = re.match(r"^[\w.-]+@([\w.-]+):", repository)  # user@server:path, ssh without a scheme
    parts = urlsplit(repository)
    if scp_like:
        server, port = scp_like[1], 22
    elif parts.scheme in ("", "file"):
        return f"test -d {shlex.quote(parts.path or repository)}"
    else:
        server = parts.hostname or ""
        port = parts.port or {"https": 443, "http": 80, "ssh": 22, "git": 9418}.get(parts.scheme, 443)
    if not re.fullmatch(r"[\w.:-]+", server):
        return "false"
    return f"timeout {PROBE_SECONDS} bash -c 'exec 3<>/dev/tcp/{server}/{port}' 2>/dev/null"


# --- operations ----------------------------------------------------------------------------------


@operation()
def git_checkout(path: str, repository: str, commit: str):
    """Ensure `path` is a checkout of `repository` at `commit`, detached (no branch to update).

    + path: the working tree (created when missing; files untracked by the repository are kept)
    + repository: URL or path to fetch from (it becomes `origin`)
    + commit: the full commit hash to check out; local changes to tracked files are discarded

    **Example:**

    .. code:: python

        git_checkout(name="discourse_docker", path="/var/discourse",
                     repository="https://github.com/discourse/discourse_docker.git", commit="8e01602a...")
    """
    current = host.get_fact(GitCheckout, path=path)
    if current and current["head"] == commit and current["origin"] == repository:
        host.noop(f"{path} is at {commit[:12]}")
        return
    git = f"git -C {shlex.quote(path)}"
    url, sha = shlex.quote(repository), shlex.quote(commit)
    if current is None:
        yield f"mkdir -p {shlex.quote(path)}"
        yield f"{git} init -q"
    if not current or current["origin"] is None:
        yield f"{git} remote add origin {url}"
    elif current["origin"] != repository:
        yield f"{git} remote set-url origin {url}"
    if not (current and current["head"] and _has_commit(path, commit)):
        # By hash first (GitHub serves any commit it has); else everything a clone would fetch.
        yield f"{git} fetch -q origin {sha} 2>/dev/null || {git} fetch -q origin"
    yield f"{git} -c advice.detachedHead=false checkout -q --force --detach {sha}"


@operation()
def launcher_rebuild(directory: str, container: str, stamp_path: str, stamp: str):
    """Run `./launcher rebuild CONTAINER` when the container is missing or was built from
    something else than `stamp` says; record `stamp` once the rebuild succeeded.

    + directory: the discourse_docker checkout holding the launcher
    + container: the container definition, containers/CONTAINER.yml
    + stamp_path: the file recording what the running container was built from
    + stamp: what it must be built from (see build_stamp)

    **Example:**

    .. code:: python

        launcher_rebuild(name="Build Discourse", directory="/var/discourse", container="app",
                         stamp_path="/var/lib/commonstack/discourse-build", stamp=build_stamp(commit, app_yml))
    """
    built = host.get_fact(FileContents, path=stamp_path)
    reason = rebuild_reason(
        host.get_fact(DockerContainer, container=container), built[0].strip() if built else None, stamp
    )
    if reason is None:
        host.noop(f"the {container} container is built from the current app.yml and commit")
        return
    yield f"cd {shlex.quote(directory)} && ./launcher rebuild {shlex.quote(container)}"
    yield f"install -m 600 /dev/null {shlex.quote(stamp_path)}"
    yield f"printf '%s\\n' {shlex.quote(stamp)} > {shlex.quote(stamp_path)}"


@operation()
def launcher_started(directory: str, container: str, stamp_path: str, stamp: str):
    """Start an existing container that is stopped (`./launcher start`). One that launcher_rebuild
    is about to rebuild (missing, or built from something else than `stamp`) is left to it: the
    rebuild starts what it builds.

    **Example:**

    .. code:: python

        launcher_started(name="Discourse running", directory="/var/discourse", container="app",
                         stamp_path="/var/lib/commonstack/discourse-build", stamp=build_stamp(commit, app_yml))
    """
    state = host.get_fact(DockerContainer, container=container)
    built = host.get_fact(FileContents, path=stamp_path)
    if rebuild_reason(state, built[0].strip() if built else None, stamp):
        host.noop(f"the {container} container is rebuilt, which starts it")
    elif state == "running":
        host.noop(f"the {container} container is running")
    else:
        yield f"cd {shlex.quote(directory)} && ./launcher start {shlex.quote(container)}"


# --- the deploy ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForumPlan:
    """What the deploy will do on this host, and the preflight's verdict on it."""

    source: Source
    stamp: str
    verdict: Verdict


def installed_version() -> str | None:
    """The discourse_docker commit the forum was built from on the current host (None: no forum)."""
    if host.get_fact(DockerContainer, container=CONTAINER) in (None, "absent"):
        return None
    checkout = host.get_fact(GitCheckout, path=DISCOURSE_DIR)
    return checkout["head"] if checkout else None


def _forum_plan(plan: HostPlan) -> ForumPlan:
    source = discourse_docker_source(plan.profile.discourse)
    running = plan.installed.get("discourse")
    if running and running != source.commit:  # a running forum keeps its launcher: `commonstack upgrade`
        source = replace(source, commit=running)
    prerequisites_only = plan.profile.discourse.install == "prerequisites"
    app_yml = next(f for f in plan.files if f.path == APP_YML)
    stamp = build_stamp(source.commit, app_yml.content)
    checkout = host.get_fact(GitCheckout, path=DISCOURSE_DIR)
    container = host.get_fact(DockerContainer, container=CONTAINER)
    built = host.get_fact(FileContents, path=BUILD_STAMP)
    fetches = not prerequisites_only and not (
        checkout and checkout["head"] == source.commit and checkout["origin"] == source.repository
    )
    builds = not prerequisites_only and rebuild_reason(container, built[0].strip() if built else None, stamp) is not None
    if (fetches or builds) and not source.overridden:
        require_upstream(plan, "discourse", f"{source.repository} and Docker Hub")
    forum = ForumHost(
        memory_mb=plan.release.facts.memory_mb,
        arch=plan.release.facts.arch,
        swap_mb=max(plan.sizing.swap_mb, host.get_fact(SwapTotalMb)),
        free_disk_mb=host.get_fact(FreeDiskMb, path="/var"),
        docker=host.get_fact(DockerEngine),
        first_build=container in (None, "absent"),
        will_build=builds,
        source_reachable=host.get_fact(RepositoryAnswers, repository=source.repository)
        if fetches or builds
        else None,
    )
    return ForumPlan(source, stamp, preflight(forum, plan.profile.smtp, plan.secrets.get("smtp_password"), source))


def discourse_preflight(plan: HostPlan) -> ForumPlan:
    """Refuse, before anything changes on the host, a host that cannot carry Discourse.

    Raises SourceUnavailable when the only problem is that the repository does not answer
    (`try` then leaves the forum out), DiscoursePreflightError (one line, every reason) otherwise.
    """
    forum = _forum_plan(plan)
    refused = refusal(forum.verdict)
    if refused:
        raise refused
    return forum


def refusal(verdict: Verdict) -> CommonstackError | None:
    """The one-line error for a verdict with problems: SourceUnavailable when the repository's
    reach is the only one (`try` may leave the forum out), else DiscoursePreflightError."""
    if not verdict.problems:
        return None
    message = "; ".join(verdict.problems)
    if all(problem.startswith(UNREACHABLE) for problem in verdict.problems):
        return SourceUnavailable("discourse", message)
    return DiscoursePreflightError(f"discourse: {message}")


def _config_files(plan: HostPlan, *paths: str) -> HostPlan:
    return replace(plan, files=[f for f in plan.files if f.path in paths])


@deploy("Discourse")
def discourse(plan: HostPlan) -> None:
    """Preflight, discourse_docker at its pinned commit, app.yml, and a rebuild when needed (see
    the module docstring). With `discourse.install: prerequisites` in the profile, only what needs
    no network beyond Debian's mirror: app.yml and the swappiness; a later deploy with `full`
    fetches discourse_docker and builds the forum. The Docker engine is the docker layer's.

    Example, in a pyinfra deploy file::

        from commonstack.deploys.discourse import discourse
        discourse(plan)   # plan = commonstack.plan.plan_host(profile, host, secrets, release)
    """
    forum = discourse_preflight(plan)  # when called on its own; stack.py runs it before any layer
    source, warnings = forum.source, forum.verdict.warnings

    files.directory(name="Kit state folder", path=STATE_DIR, mode="0700")
    put_configs(_config_files(plan, APP_YML), "discourse")
    sysctl = put_configs(_config_files(plan, SYSCTL_CONF), "discourse")
    # systemd-sysctl applies every sysctl.d file; in a container it is skipped (read-only /proc/sys).
    systemd.service(name="Apply the swappiness setting", service="systemd-sysctl", restarted=True, _if=changed(sysctl))
    if plan.profile.discourse.install == "prerequisites":
        return
    git_checkout(
        name=f"Check out discourse_docker {source.commit[:12]} in {DISCOURSE_DIR}",
        path=DISCOURSE_DIR,
        repository=source.repository,
        commit=source.commit,
    )
    launcher_rebuild(
        name=f"Build and start the Discourse container (./launcher rebuild {CONTAINER})"
        + (f" -- {'; '.join(warnings)}" if warnings else ""),
        directory=DISCOURSE_DIR,
        container=CONTAINER,
        stamp_path=BUILD_STAMP,
        stamp=forum.stamp,
    )
    launcher_started(
        name="Discourse container running",
        directory=DISCOURSE_DIR,
        container=CONTAINER,
        stamp_path=BUILD_STAMP,
        stamp=forum.stamp,
    )


@operation()
def container_stopped(container: str):
    """Stop a running Docker container (one that is stopped or absent is left as it is).

    **Example:**

    .. code:: python

        container_stopped(name="Stop the forum", container="app")
    """
    state = host.get_fact(DockerContainer, container=container)
    if state != "running":
        host.noop(f"the {container} container is {state or 'not there (no Docker)'}")
        return
    yield f"docker stop {shlex.quote(container)}"


def discourse_stopped(plan: HostPlan) -> None:
    """What turns the forum off: its container stopped (the layer's units are Docker's, and Docker
    may keep running for other containers). Its data stays in /var/discourse/shared."""
    container_stopped(name=f"Turn off discourse: stop the {CONTAINER} container", container=CONTAINER)
