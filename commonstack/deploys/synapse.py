"""Synapse from PyPI in a virtualenv: its user, config, signing key, admin account and service."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from io import StringIO

from pyinfra import host
from pyinfra.api import FactBase, QuoteString, StringCommand, deploy, operation
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server, systemd

from commonstack.deploys.configs import changed, put_configs
from commonstack.errors import CommonstackError
from commonstack.plan import HostPlan
from commonstack.stacks.paths import MATRIX_ADMIN_LOCALPART as ADMIN_LOCALPART
from commonstack.stacks.paths import MATRIX_ADMIN_PASSWORD_FILE as ADMIN_PASSWORD_FILE
from commonstack.stacks.paths import MATRIX_SERVER_NAME_RECORD as SERVER_NAME_RECORD
from commonstack.stacks.paths import SYNAPSE_CONFIG as CONFIG
from commonstack.stacks.paths import SYNAPSE_DIST_INFO as DIST_INFO
from commonstack.stacks.paths import SYNAPSE_DATA as DATA
from commonstack.stacks.paths import SYNAPSE_SIGNING_KEY as SIGNING_KEY
from commonstack.stacks.paths import SYNAPSE_URL as LOCAL_URL
from commonstack.stacks.paths import SYNAPSE_USER as USER
from commonstack.stacks.paths import SYNAPSE_RELEASES, synapse_release_of
from commonstack.stacks.paths import SYNAPSE_VENV as VENV
from commonstack.stacks.versions import versions

INSTALLER = "/usr/local/sbin/commonstack-install-synapse"


class ServerNameChanged(CommonstackError):
    """The profile's Matrix server name differs from the one the homeserver was set up with."""


class NoSynapseWheel(CommonstackError):
    """No Synapse wheel is pinned for the host's architecture."""


def admin_user_id(server_name: str) -> str:
    return f"@{ADMIN_LOCALPART}:{server_name}"


def refuse_changed_server_name(recorded: str, wanted: str) -> None:
    """Raise, in one line, when a homeserver set up as `recorded` would be configured as `wanted`."""
    if recorded and recorded != wanted:
        raise ServerNameChanged(
            f"matrix.server_name is {wanted}, but this homeserver was set up as {recorded} and a Matrix "
            f"server name can never change (every account and room carries it): set matrix.server_name: "
            f"{recorded} in stack.yaml; a new name needs a new, empty homeserver"
        )


def require_wheel(arch: str, version: str | None = None) -> None:
    pins = versions().synapse
    pinned = pins.releases[version or pins.current].sha256
    if not pinned.get(arch):
        raise NoSynapseWheel(
            f"Synapse is pinned as a wheel for {', '.join(sorted(pinned))} only, not {arch}: install a "
            "64-bit OS (a Raspberry Pi 4 or 5 runs arm64) or place matrix on another host"
        )


def wheel_sha256(version: str, arch: str) -> str:
    """The pinned hash of a known release's wheel for this architecture."""
    require_wheel(arch, version)
    return versions().synapse.releases[version].sha256[arch]


class RecordedServerName(FactBase[str]):
    """The server name this homeserver was set up with: the kit's record, else the name in its
    database's accounts (a host deployed before the record existed), else "" (a new homeserver)."""

    def command(self) -> str:
        query = "SELECT substring(name from position(':' in name) + 1) FROM users ORDER BY creation_ts LIMIT 1"
        return (
            f"if [ -s {SERVER_NAME_RECORD} ]; then cat {SERVER_NAME_RECORD}; "
            f"else cd / && runuser -u postgres -- psql -XAtq -d synapse -c {shlex.quote(query)} 2>/dev/null; fi; true"
        )

    def default(self) -> str:
        return ""  # a new homeserver prints nothing

    def process(self, output) -> str:
        lines = [line.strip() for line in output if line.strip()]
        return lines[0] if lines else ""


@dataclass(frozen=True)
class SynapseOnHost:
    """The Synapse release /opt/synapse/venv holds, and whether it can run."""

    version: str | None = None  # None: no Synapse here
    works: bool = False  # its Python imports psycopg2
    folder: str | None = None  # the virtualenv /opt/synapse/venv points at (None: a folder of its own)


class SynapseInstall(FactBase[SynapseOnHost]):
    """What /opt/synapse/venv holds: the release its installed package names, and whether its
    Python still runs (one that went away with a Debian release upgrade does not)."""

    def command(self) -> str:
        # The release from its metadata folder's name: importing synapse (Twisted and all) costs the
        # host 0.4 s of CPU at every plan, reading its metadata in Python 0.03 s. psycopg2 (0.03 s)
        # breaks first when Debian's Python or libpq changes.
        return (
            f"if [ -e {VENV} ]; then "
            f"printf 'folder=%s\\n' \"$(readlink {VENV})\"; "
            f"printf 'works=%s\\n' \"$({VENV}/bin/python -c 'import psycopg2' 2>/dev/null && echo yes)\"; "
            f"printf 'package=%s\\n' \"$(ls -d {DIST_INFO} 2>/dev/null | head -n 1)\"; "
            "fi; true"
        )

    def default(self) -> SynapseOnHost:
        return SynapseOnHost()

    def process(self, output) -> SynapseOnHost:
        values = dict(line.strip().split("=", 1) for line in output if "=" in line)
        version = synapse_release_of(values.get("package", ""))
        if not version:
            return SynapseOnHost()
        return SynapseOnHost(version=version, works=values.get("works") == "yes", folder=values.get("folder") or None)


def installed_version() -> str | None:
    """The Synapse release on the current host (None: none yet)."""
    return host.get_fact(SynapseInstall).version


class MatrixUserExists(FactBase[bool]):
    """Whether Synapse's database has this account (False while there is no database yet)."""

    def command(self, user_id: str) -> str:
        query = f"SELECT count(*) FROM users WHERE name = '{user_id}'"
        return f"cd / && runuser -u postgres -- psql -XAtq -d synapse -c {shlex.quote(query)} 2>/dev/null || true"

    def default(self) -> bool:
        return False

    def process(self, output) -> bool:
        lines = [line.strip() for line in output if line.strip()]
        return bool(lines) and lines[0].isdigit() and int(lines[0]) > 0


def release_folder(version: str) -> str:
    """Where a Synapse release's virtualenv lives, beside the others."""
    return f"{SYNAPSE_RELEASES}/venv-{version}"


def point_venv_at(version: str) -> str:
    """The shell that points /opt/synapse/venv at a release's virtualenv in one step (a rename).
    A virtualenv of the old layout (a folder of its own, not a link) is first renamed after its
    release, beside the others (never into one of them)."""
    new_link = f"{VENV}.commonstack-new"
    return (
        f"if [ -d {VENV} ] && [ ! -L {VENV} ]; then "
        f"old=$(ls -d {DIST_INFO} 2>/dev/null | head -n 1 "
        "| sed 's/.*matrix_synapse-//; s/[.]dist-info$//'); "
        f'aside="{SYNAPSE_RELEASES}/venv-${{old:-unknown}}"; '
        'if [ -e "$aside" ]; then aside="$aside.before-$(date +%s)"; fi; '
        f'mv -T {VENV} "$aside"; fi && '
        f"ln -sfn venv-{version} {new_link} && mv -T {new_link} {VENV}"
    )


@operation()
def synapse_virtualenv(version: str, sha256: str | None, installer: str = INSTALLER):
    """Install Synapse `version` (its own virtualenv) and point /opt/synapse/venv at it, unless
    /opt/synapse/venv already holds that release and it works.

    + version: the release to run (a deploy keeps the running one: see HostPlan.deploy_version)
    + sha256: the wheel's pinned hash for the host's architecture (None: the release is not one
      versions.yaml knows, which only a running homeserver can be: it is never installed again)
    + installer: the script that creates the virtualenv and pip-installs the hash-checked wheel

    **Example:**

    .. code:: python

        synapse_virtualenv(name="Synapse 1.163.2", version="1.163.2", sha256="6cecae98...")
    """
    found = host.get_fact(SynapseInstall)
    if found.works and found.version == version:
        host.noop(f"Synapse {version} is installed")
        return
    if sha256 is None:
        raise NoSynapseWheel(
            f"Synapse {version}'s virtualenv in {VENV} does not work, and this kit has no pinned wheel of "
            f"{version} to install it again: `commonstack upgrade` moves it to a release the kit knows"
        )
    yield StringCommand(installer, QuoteString(version), QuoteString(sha256))
    yield point_venv_at(version)


@operation()
def signing_key(path: str = SIGNING_KEY, user: str = USER):
    """Generate the homeserver's signing key once; an existing key is never replaced.

    Other servers remember it: a new key would make them distrust this server's past events.
    """
    if host.get_fact(File, path=path):
        host.noop(f"{path} exists (a signing key is never regenerated)")
        return
    new = shlex.quote(f"{path}.new")
    yield (
        f"umask 077 && {VENV}/bin/generate_signing_key -o {new} && chown {user}:{user} {new} "
        f"&& mv {new} {shlex.quote(path)}"
    )


@operation()
def matrix_admin(server_name: str, password_file: str = ADMIN_PASSWORD_FILE):
    """Create the Matrix admin account with the shared registration secret, if it does not exist."""
    user_id = admin_user_id(server_name)
    if host.get_fact(MatrixUserExists, user_id=user_id):
        host.noop(f"{user_id} exists")
        return
    yield (
        f"{VENV}/bin/register_new_matrix_user --exists-ok --admin -u {ADMIN_LOCALPART} "
        f"--password-file {shlex.quote(password_file)} -c {CONFIG} {LOCAL_URL}"
    )


def synapse_preflight(plan: HostPlan) -> None:
    """Refuse, before anything changes on the host, a changed server name or an unpinned architecture."""
    refuse_changed_server_name(host.get_fact(RecordedServerName), plan.profile.server_name)
    require_wheel(plan.release.facts.arch, plan.wanted_version("synapse"))


@deploy("Synapse")
def synapse(plan: HostPlan) -> None:
    """Install Synapse (PyPI, virtualenv), configure it, start it and create the admin account.

    Refuses, before any change, a server name that differs from the one the homeserver was set up
    with, and an architecture without a pinned wheel.

    Example, in a pyinfra deploy file::

        from commonstack.deploys.synapse import synapse
        synapse(plan)   # plan = commonstack.plan.plan_host(profile, host, secrets, release)
    """
    synapse_preflight(plan)  # when called on its own; stack.py runs it before every layer's operations
    server_name = plan.profile.server_name
    version = plan.deploy_version("synapse")

    apt.packages(name="Install Synapse's prerequisites", packages=plan.packages_of(("synapse",)), no_recommends=True)
    server.group(name=f"Group {USER}", group=USER, system=True)
    server.user(
        name=f"System user {USER}",
        user=USER,
        group=USER,
        system=True,
        home=DATA,
        shell="/usr/sbin/nologin",
        ensure_home=False,  # the folder below, with its mode
    )
    files.directory(name="Synapse data folder", path=DATA, user=USER, group=USER, mode="0700")
    files.directory(name="Synapse media store", path=f"{DATA}/media", user=USER, group=USER, mode="0700")

    configs = put_configs(plan, "synapse")
    unit = [op for f, op in zip(plan.files_of("synapse"), configs) if f.path.startswith("/etc/systemd/")]
    installed = synapse_virtualenv(
        name=f"Synapse {version} in {release_folder(version)}",
        version=version,
        sha256=wheel_sha256(version, plan.release.facts.arch) if version in versions().synapse.releases else None,
    )
    key = signing_key(name="Signing key (generated once)")
    files.put(
        name="Matrix admin password (root only)",
        src=StringIO(plan.secrets["matrix_admin_password"] + "\n"),
        dest=ADMIN_PASSWORD_FILE,
        mode="0600",
        user="root",
        group="root",
    )

    systemd.daemon_reload(name="Reload systemd for Synapse's unit", _if=changed(unit))
    # Started if stopped, restarted if running: only when its config, code or key changed.
    systemd.service(
        name="Restart Synapse for the new settings or version",
        service="matrix-synapse",
        running=True,
        restarted=True,
        _if=changed(configs, [installed, key]),
    )
    systemd.service(name="Synapse running", service="matrix-synapse", running=True, enabled=True)
    matrix_admin(name="Matrix admin account", server_name=server_name)
    files.put(
        name="Record the Matrix server name",
        src=StringIO(server_name + "\n"),
        dest=SERVER_NAME_RECORD,
        mode="0644",
        user="root",
        group="root",
    )
