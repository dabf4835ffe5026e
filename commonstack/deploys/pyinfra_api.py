"""Every pyinfra name the runner uses, in one module that checks the pinned pyinfra release.

The runner's modules (runner.py, connect.py, run_log.py, preview.py, prefetch.py) import pyinfra
only through this one (tests/unit/test_pyinfra_api.py keeps it so). The first part re-exports
what pyinfra documents for programmatic use; the second part, "pyinfra's internals", wraps what
it does not document: private attributes, undocumented functions, and behaviour the runner
relies on. An upgrade of pyinfra therefore means: read the second part against the new release's
source, adapt it, run tests/unit/test_runner.py and tests/unit/test_prefetch.py, change PINNED
(commonstack/deploys/__init__.py).

Importing this module does not patch gevent: runner.py does, before it imports this module
(gevent must patch before anything imports ssl, and pyinfra imports ssl).
"""

from __future__ import annotations

import functools
import posixpath
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any

import gevent.lock

# pyinfra's documented API (re-exported as is)
from pyinfra import host  # noqa: F401  (the current host, inside operations)
from pyinfra.api import (  # noqa: F401
    BaseStateCallback,
    Config,
    FactBase,
    FileUploadCommand,
    Inventory,
    QuoteString,
    State,
    StringCommand,
)
from pyinfra.api.connect import disconnect_all  # noqa: F401
from pyinfra.api.exceptions import ConnectError, PyinfraError  # noqa: F401
from pyinfra.api.facts import get_fact  # noqa: F401
from pyinfra.api.operations import run_ops  # noqa: F401

# pyinfra's internals: read each use below against a new release before changing PINNED
from pyinfra.api import arguments as pyinfra_arguments
from pyinfra.api.command import PyinfraCommand
from pyinfra.api.state import StateStage  # noqa: F401  (state.set_stage / current_stage)
from pyinfra.api.util import get_file_io
from pyinfra.connectors import util as connector_util
from pyinfra.connectors.sshuserclient.client import get_host_keys
from pyinfra.context import ctx_config, ctx_host, ctx_inventory, ctx_state
from pyinfra.facts.files import Directory, File, Sha1File
from pyinfra.facts.server import Date, Users  # noqa: F401  (Users: fact_shortcuts.py)
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus
from pyinfra.operations.apt import APT_UPDATE_FILENAME

from commonstack.deploys import PINNED
from commonstack.errors import CommonstackError


class PyinfraVersionError(CommonstackError):
    """The installed pyinfra is not the release whose internals this module was written for."""


if version("pyinfra") != PINNED:
    raise PyinfraVersionError(
        f"commonstack drives pyinfra {PINNED} (see commonstack/deploys/pyinfra_api.py), but pyinfra "
        f"{version('pyinfra')} is installed: reinstall commonstack (`pip install -e .`) to get pyinfra=={PINNED}"
    )

# --- pyinfra's internals ---------------------------------------------------------------------

# pyinfra 3.10 evaluates the type hints of its global arguments (typing.get_type_hints) for every
# operation and every fact it reads: a third of the CPU of preparing a host. They never change.
if not hasattr(pyinfra_arguments.all_global_arguments, "cache_info"):
    pyinfra_arguments.all_global_arguments = functools.cache(pyinfra_arguments.all_global_arguments)

CommandOutput = connector_util.CommandOutput
OutputLine = connector_util.OutputLine
# Lines after which pyinfra's connector asks for a sudo password (connectors/util.py).
SUDO_PASSWORD_LINES = connector_util.SUDO_PASSWORD_REQUIRED_LINES


@contextmanager
def run_context(state: State) -> Iterator[None]:
    """pyinfra's global state and inventory, as its CLI sets them for a run (ctx_state is global,
    not per greenlet: one run at a time in a process)."""
    with _using((ctx_state, state), (ctx_inventory, state.inventory)):
        yield


@contextmanager
def host_context(state: State, host: Any) -> Iterator[None]:
    """What an operation needs to be added for `host`: a copy of the config and the current host
    (both per greenlet), as pyinfra_cli.util._parallel_load_hosts sets them."""
    with _using((ctx_config, state.config.copy()), (ctx_host, host)):
        yield


@contextmanager
def _using(*settings: tuple[Any, Any]) -> Iterator[None]:
    """pyinfra's contexts set to these values, then back to the previous ones however the block
    ends (pyinfra's own ``ContextManager.use`` sets them back only when it ends normally)."""
    previous = [(context, context.get()) for context, _ in settings]
    for context, value in settings:
        context.set(value)
    try:
        yield
    finally:
        for context, value in previous:
            context.set(value)


def forget_known_hosts() -> None:
    """pyinfra memoizes each known_hosts file for the life of the process; a run must see a key
    pinned since the last one."""
    get_host_keys.cache.clear()


@contextmanager
def refused_password_prompts(error: str) -> Iterator[None]:
    """pyinfra's connector calls ``getpass()`` when a command printed "sudo: a password is
    required", even in API mode: raise OSError(`error`) instead of blocking on a hidden prompt."""
    original = connector_util.getpass

    def refuse(prompt: str = "", stream: Any = None) -> str:
        raise OSError(error)

    connector_util.getpass = refuse
    try:
        yield
    finally:
        connector_util.getpass = original


def ssh_client(host: Any) -> Any:
    """The host's paramiko SSHClient, or None (the SSH connector keeps it as `.client`)."""
    return getattr(getattr(host, "connector", None), "client", None)


def offered_host_key(host: Any) -> Any:
    """The host key the server presented, if the handshake got that far."""
    try:
        transport = ssh_client(host).get_transport()
        return transport.get_remote_server_key() if transport is not None else None
    except Exception:
        return None


def close_ssh_client(host: Any) -> None:
    """The SSH connector's ``disconnect()`` leaves the paramiko client open."""
    client = ssh_client(host)
    if client is not None:
        try:
            client.close()
        except Exception:
            pass


# What a connector does over its connection: the SSH connector's methods read the `.client` that
# its `connect()` sets.
CONNECTION_USES = ("run_shell_command", "put_file", "get_file", "rsync", "check_can_rsync")
FIRST_USE_FAILURE = "commonstack_first_use_failure"  # set on a connector whose connection failed


def connect_on_first_use(host: Any, connect: Any) -> None:
    """Mark `host` connected without connecting it: `connect(host)` runs before its connector's
    first command or file transfer. If it raises, every use raises the same, without trying again
    (`first_use_failure`)."""
    connector = host.connector
    lock = gevent.lock.Semaphore()

    def waiting(use: Any) -> Any:
        @functools.wraps(use)
        def first_use(*args: Any, **kwargs: Any) -> Any:
            with lock:
                if failure := first_use_failure(host):
                    raise ConnectError(str(failure)) from failure
                if use.__name__ in vars(connector):  # not connected yet
                    try:
                        connect(host)
                    except Exception as e:
                        setattr(connector, FIRST_USE_FAILURE, e)
                        raise
                    for name in CONNECTION_USES:
                        delattr(connector, name)
            return use(*args, **kwargs)

        return first_use

    for name in CONNECTION_USES:
        setattr(connector, name, waiting(getattr(connector, name)))
    host.connected = True


def first_use_failure(host: Any) -> Exception | None:
    """Why `host`'s connection on first use failed, if it did."""
    return getattr(host.connector, FIRST_USE_FAILURE, None)


def check_connection_settings(host: Any) -> None:
    """Raise what pyinfra's SSH connector would before connecting `host`: its key file unusable
    (encrypted, say: OpenSSH may use it through an agent, pyinfra cannot). Loads the key once
    for the run (pyinfra keeps it in the State)."""
    host.connector.make_paramiko_kwargs()


# Operations ---------------------------------------------------------------------------------


def operation_names(state: State, op_hash: str) -> set[str]:
    """Every name the hosts gave the operation at `op_hash` (pyinfra merges them)."""
    meta = state.op_meta.get(op_hash)
    return set(meta.names) if meta is not None else set()


def prepared_change(op_data: Any) -> bool:
    """Whether preparing found that the operation would change something. pyinfra keeps it in
    a private attribute; ``will_change`` would evaluate the operation again."""
    return bool(op_data.operation_meta._maybe_is_change)


class PlannedCommand(PyinfraCommand):
    """Placeholder "command" of an operation marked complete by a plan (never executed)."""

    def execute(self, state, host, connector_arguments):  # pragma: no cover
        raise RuntimeError("a planned operation cannot be executed")


class FailedCommand(PyinfraCommand):
    """A command that fails its operation on its host, without running anything."""

    def execute(self, state, host, connector_arguments):
        return False


def mark_planned(op_data: Any, will_change: bool) -> None:
    """Mark an operation complete as planned, so that ``did_change()`` answers "would change"
    (and ``_if=`` conditions built on it evaluate as they will during the run)."""
    meta = op_data.operation_meta
    if not meta.is_complete():
        meta.set_complete(True, [PlannedCommand()] if will_change else [], CommandOutput([]))


def read_upload_source(src: Any) -> bytes:
    """The bytes a FileUploadCommand would upload (a path or a file object)."""
    with get_file_io(src, "rb") as f:
        data = f.read()
    return data.encode() if isinstance(data, str) else data


# Commands and facts --------------------------------------------------------------------------


def raw_command(command: Any) -> str:
    """The exact text of a command (with sensitive values, unlike str() of a StringCommand)."""
    return command.get_raw_value() if isinstance(command, StringCommand) else str(command)


# The arguments pyinfra's connectors take out before building the shell command line.
CONNECTOR_ONLY_ARGUMENTS = ("_get_pty", "_timeout", "_stdin", "_success_exit_codes")


def shell_command_line(state: State, host: Any, command: Any, arguments: dict) -> str:
    """The command line pyinfra's SSH connector would run for `command` with these connector
    arguments (sudo/su wrapping, environment, working folder, shell)."""
    wrapped = {k: v for k, v in arguments.items() if k not in CONNECTOR_ONLY_ARGUMENTS}
    return connector_util.make_unix_command_for_host(state, host, command, **wrapped).get_raw_value()


def fake_connection(host: Any, run_shell_command: Any) -> None:
    """Make `host` (of a throwaway State) look connected, its commands answered by
    `run_shell_command(command, print_output=..., print_input=..., **arguments)`."""
    host.connected = True
    host.run_shell_command = run_shell_command


def evaluate_each_operation(state: State, on_error: Any) -> None:
    """Make `state` (throwaway, never executed) evaluate each operation as it is added, as
    ``check_for_changes`` does, but to its last command (a fact read as its default may make an
    operation yield a command first where the real one reads more facts: server.user's home
    folder once the user exists), and with an exception raised by the operation's own code
    reported to `on_error` instead of ending the deploy code that added it: an operation may
    raise on a fact that is not known yet (server.group tests ``"BSD" in host.get_fact(Os)``,
    and Os defaults to None)."""
    state.check_for_changes = False  # operation.py then only stores the operation...

    def set_op_data_for_host(host, op_hash, op_data):  # ...here, where it is evaluated
        state.ops[host][op_hash] = op_data
        try:
            for _ in op_data.command_generator():
                pass
        except Exception as e:
            on_error(e)

    state.set_op_data_for_host = set_op_data_for_host


def intercept_commands(host: Any, intercept: Any) -> Any:
    """Route every command run on `host` through `intercept(original, command, print_output,
    print_input, **arguments)`; facts and operations call ``host.run_shell_command``."""
    original = host.run_shell_command

    def run_shell_command(command, print_output=False, print_input=False, **arguments):
        return intercept(original, command, print_output, print_input, **arguments)

    host.run_shell_command = run_shell_command
    return original


# A checksum read ahead of need (`related_facts`) only for a small regular file: not a swap file.
SMALL_FILE = 1024 * 1024


def related_facts(fact: type, kwargs: dict) -> list[tuple[type, dict, str | None]]:
    """Facts that pyinfra's operations ask right after `fact` (with `kwargs`) has answered, as
    (fact, kwargs, a shell condition under which it is worth reading, or None): asking them
    together saves a round trip each (prefetch.py).

    files.put/template: when the file exists, its folder (create_remote_dir) and its SHA1
    (operations/files.py: put, _create_remote_dir, _file_equal). apt.update with a cache time:
    after apt's update stamp, the host's date. systemd.service: a unit's state, then whether it
    is enabled (operations/systemd.py: service).
    """
    path = kwargs.get("path")
    if fact is File and isinstance(path, str) and path.startswith("/"):
        quoted = shlex.quote(path)
        small = f"[ -f {quoted} ] && [ $(stat -c %s {quoted}) -le {SMALL_FILE} ]"
        related: list[tuple[type, dict, str | None]] = [(Sha1File, {"path": path}, small)]
        folder = posixpath.dirname(path)
        related += [(Directory, {"path": folder}, None)] if folder and folder != path else []
        return related + ([(Date, {}, f"[ -e {quoted} ]")] if path == APT_UPDATE_FILENAME else [])
    if fact is SystemdStatus:
        return [(SystemdEnabled, dict(kwargs), None)]
    return []


def operations_in_order(state: State, host: Any) -> list[tuple[str, Any]]:
    """(op hash, the operation's data for `host`) for each operation `host` added, in order
    (pyinfra keeps the order in ``host.op_hash_order``; a ``_run_once`` operation that ran on
    another host has no data here)."""
    ops = state.ops[host]
    return [(op_hash, ops[op_hash]) for op_hash in host.op_hash_order if op_hash in ops]


def last_added(state: State, host: Any) -> tuple[str | None, bool]:
    """(op hash of the last operation `host` began to add, whether it was added completely)."""
    if not host.op_hash_order:
        return None, False
    op_hash = host.op_hash_order[-1]
    return op_hash, op_hash in state.ops[host]


def own_name(state: State, host: Any, op_hash: str) -> str | None:
    """The name `host` gave the operation (its ``name=`` argument)."""
    return state.get_op_data_for_host(host, op_hash).global_arguments.get("name")


def contain_operation_errors(state: State, on_error: Any) -> None:
    """An exception raised by an operation's own code while executing escapes pyinfra's
    ``run_ops`` and ends the run for every host. Here each is reported with
    ``on_error(host name, op hash, exception)`` and fails that operation on that host only."""
    for host in state.active_hosts:
        for op_hash, op_data in state.ops[host].items():
            op_data.command_generator = _guarded(
                op_data.command_generator, functools.partial(on_error, host.name, op_hash)
            )


def _guarded(generator: Any, on_error: Any) -> Any:
    def guarded() -> Iterator:
        try:
            yield from generator()
        except Exception as e:
            on_error(e)
            yield FailedCommand()

    return guarded
