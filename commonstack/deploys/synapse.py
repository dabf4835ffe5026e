"""Synapse from PyPI in a virtualenv: its user, config, signing key, admin account and service."""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import FactBase, deploy, operation
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server, systemd

from commonstack.deploys.configs import changed, put_configs
from commonstack.errors import CommonstackError
from commonstack.plan import HostPlan
from commonstack.stacks.paths import MATRIX_ADMIN_LOCALPART as ADMIN_LOCALPART
from commonstack.stacks.paths import MATRIX_ADMIN_PASSWORD_FILE as ADMIN_PASSWORD_FILE
from commonstack.stacks.paths import MATRIX_SERVER_NAME_RECORD as SERVER_NAME_RECORD
from commonstack.stacks.paths import SYNAPSE_CONFIG as CONFIG
from commonstack.stacks.paths import SYNAPSE_DATA as DATA
from commonstack.stacks.paths import SYNAPSE_SIGNING_KEY as SIGNING_KEY
from commonstack.stacks.paths import SYNAPSE_URL as LOCAL_URL
from commonstack.stacks.paths import SYNAPSE_USER as USER
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


def require_wheel(arch: str) -> None:
    pinned = versions().synapse.sha256
    if not pinned.get(arch):
        raise NoSynapseWheel(
            f"Synapse is pinned as a wheel for {', '.join(sorted(pinned))} only, not {arch}: install a "
            "64-bit OS (a Raspberry Pi 4 or 5 runs arm64) or place matrix on another host"
        )


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


class SynapseVersion(FactBase[str]):
    """The Synapse version the virtualenv holds ("" when it is missing or broken)."""

    def command(self) -> str:
        # The installed release from its metadata: importing synapse (Twisted and all) costs the
        # host 0.4 s of CPU at every plan. psycopg2 breaks first when Debian's libpq changes.
        check = "import psycopg2; from importlib.metadata import version; print(version('matrix-synapse'))"
        return f"{VENV}/bin/python -c {shlex.quote(check)} 2>/dev/null || true"

    def default(self) -> str:
        return ""

    def process(self, output) -> str:
        lines = [line.strip() for line in output if line.strip()]
        return lines[-1] if lines else ""


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


@operation()
def synapse_virtualenv(version: str, installer: str = INSTALLER):
    """Install Synapse `version` into the virtualenv with `installer` unless it is there already.

    + version: the pinned Synapse release
    + installer: the script that creates the venv and pip-installs the hash-checked wheel
    """
    installed = host.get_fact(SynapseVersion)
    if installed == version:
        host.noop(f"Synapse {version} is installed")
        return
    yield installer


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
    require_wheel(plan.release.facts.arch)


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
    version = versions().synapse.version

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
    installed = synapse_virtualenv(name=f"Synapse {version} in {VENV}", version=version)
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
