"""Connecting to the hosts of a run, and turning SSH connection problems into one clear line per
host (used by ``runner``).

pyinfra's SSH connector wraps every connection failure in a ``ConnectError`` whose text is
terse ("Could not connect (...)", "SSH error (...)"). The original paramiko/socket
exception is still reachable as the ``ConnectError``'s ``__context__`` (pyinfra raises it
inside the ``except`` block), so we classify on exception *types*, not on message text.

Also here: the ``sudo`` preflight for hosts reached as a non-root user (in a plan, their early
batch probes sudo instead: early_batch.py).

The functions that take a pyinfra State import ``pyinfra_api`` (which patches gevent) when
called: the others serve callers without pyinfra (pinning keys, the tests).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Collection
from pathlib import Path
from typing import Any

from commonstack.inventories.known_hosts import fingerprint as key_fingerprint
from commonstack.inventories.known_hosts import host_pattern
from commonstack.inventories.targets import HostTarget


def one_line(text: object, limit: int = 300) -> str:
    """The first non-empty line of ``text``, stripped and shortened."""
    for line in str(text).splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def display_path(path: Path | str | None) -> str:
    """A path as the user thinks of it: relative to the working directory when under it."""
    if path is None:
        return "~/.ssh/known_hosts"
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(p)


def where(target: HostTarget) -> str:
    return f"{target.name} ({target.address}:{target.port})"


def fingerprint(key: Any) -> str:
    """``ssh-ed25519 SHA256:...`` for a paramiko PKey (as ``ssh-keygen -l`` shows it)."""
    try:
        return f"{key.get_name()} {key_fingerprint(key.get_base64())}"
    except Exception:  # pragma: no cover - a key object we do not know
        return "an unknown key"


def root_cause(error: BaseException) -> BaseException:
    """The exception pyinfra wrapped into its ConnectError (or ``error`` itself)."""
    from .pyinfra_api import ConnectError

    seen = set()
    exc: BaseException = error
    while isinstance(exc, ConnectError) and id(exc) not in seen:
        seen.add(id(exc))
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    return exc


def _errno_of(exc: OSError) -> int | None:
    from paramiko.ssh_exception import NoValidConnectionsError

    if isinstance(exc, NoValidConnectionsError):
        for sub in exc.errors.values():
            if getattr(sub, "errno", None):
                return sub.errno
        return errno.ECONNREFUSED
    return exc.errno


def describe_connect_error(
    target: HostTarget,
    error: BaseException,
    offered_key: Any = None,
    timeout: int | None = None,
) -> str:
    """ONE line telling the volunteer what went wrong connecting to ``target`` and what to do."""
    from paramiko.ssh_exception import (
        AuthenticationException,
        BadHostKeyException,
        SSHException,
    )
    from .pyinfra_api import PyinfraError

    exc = root_cause(error)
    at = where(target)
    known_hosts = display_path(target.known_hosts)
    entry = host_pattern(target.address, target.port)

    if isinstance(exc, BadHostKeyException):
        return (
            f"host key of {at} does not match {known_hosts} "
            f"(pinned {fingerprint(exc.expected_key)}, offered {fingerprint(exc.key)}) — "
            f"if the host was reinstalled, remove its line with "
            f"`ssh-keygen -R '{entry}' -f {known_hosts}` and pin the new key; "
            f"otherwise someone may be intercepting the connection: do not continue"
        )
    if isinstance(exc, AuthenticationException):
        how = (
            f"key {display_path(target.key_path)}"
            if target.key_path
            else "your ssh-agent/default keys"
        )
        return (
            f"{at} refused SSH login as {target.user} with {how} — is the matching public key "
            f"in ~{target.user}/.ssh/authorized_keys on the host?"
        )
    if isinstance(exc, SSHException) and "no host key" in str(exc).lower():
        offered = f" (it offered {fingerprint(offered_key)})" if offered_key is not None else ""
        return (
            f"host key of {at} is not in {known_hosts}{offered} — pin it first: compare "
            f"`ssh-keyscan -p {target.port} {target.address}` with `ssh-keygen -lf "
            f"/etc/ssh/ssh_host_ed25519_key.pub` run on the host's console, then add that line"
        )
    if isinstance(exc, socket.gaierror):
        return f"cannot reach {at}: cannot resolve {target.address!r} — check the address"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        secs = f" after {timeout}s" if timeout else ""
        return (
            f"cannot reach {at}: connection timed out{secs} — is the address right, the host "
            f"up, and port {target.port} open in its firewall?"
        )
    if isinstance(exc, OSError):
        code = _errno_of(exc)
        if code == errno.ECONNREFUSED:
            return (
                f"cannot reach {at}: connection refused — is the host up and sshd listening "
                f"on port {target.port}?"
            )
        if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return f"cannot reach {at}: no route to host — is the host up and the address right?"
        return f"cannot reach {at}: {one_line(exc) or type(exc).__name__}"
    if isinstance(exc, (EOFError, SSHException)):
        detail = one_line(exc) or type(exc).__name__
        return (
            f"cannot reach {at}: the SSH handshake failed ({detail}) — is sshd (and nothing "
            f"else) listening on port {target.port}?"
        )
    if isinstance(exc, PyinfraError) and target.key_path:
        key = display_path(target.key_path)
        if "encrypted" in str(exc):
            return (
                f"SSH key {key} for {target.name} is encrypted — load it into ssh-agent and "
                f"leave the key path unset, or use an unencrypted deploy key"
            )
        return f"cannot use SSH key {key} for {target.name}: {one_line(exc)}"
    return f"cannot connect to {at}: {type(exc).__name__}: {one_line(exc)}"


def transport_without_delay(sock: Any, **kwargs: Any) -> Any:
    """paramiko's Transport over `sock`, each packet sent at once (TCP_NODELAY), for paramiko's
    ``transport_factory``. paramiko leaves Nagle's algorithm on: a command's small packets then
    wait for the host's delayed acknowledgement, about 45 ms each (51 ms a command, 5 ms
    without; the handshake 66 ms, 26 ms without). A ProxyCommand's or a jump host's channel is
    left as it is (the jump host's own connection is paramiko's)."""
    from paramiko import Transport

    if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Transport(sock, **kwargs)


def connect_all(
    state: Any, hosts: list[Any], targets: dict[str, HostTarget], on_first_use: Collection[str] = ()
) -> dict[str, str]:
    """Connect the `hosts` of a pyinfra State side by side; {name: why} of those that could not
    be, in one line each. Like ``pyinfra.api.connect.connect_all``, but one host's failure is
    kept and explained instead of ending the run. Hosts named `on_first_use` (whose early batch
    opened: OpenSSH's connection was accepted) are connected only when a command needs it, and
    raise their line then (an unusable key file is found at once)."""
    import gevent

    from . import pyinfra_api as api

    def why(host, error: BaseException) -> str:
        return describe_connect_error(targets[host.name], error, api.offered_host_key(host), state.config.CONNECT_TIMEOUT)

    def connect_now(host):
        try:
            host.connector.connect()
        except Exception as e:
            raise api.ConnectError(why(host, e)) from e

    def can_wait(host) -> bool:
        try:
            api.check_connection_settings(host)
        except Exception:  # connected now, it gets its line below
            return False
        return True

    later = [h for h in hosts if h.name in on_first_use and can_wait(h)]
    for host in later:
        api.connect_on_first_use(host, connect_now)
        state.activate_host(host)
    hosts = [h for h in hosts if h not in later]

    def connect(host):
        try:
            host.connect(show_errors=False, raise_exceptions=True)
        except Exception as e:  # ConnectError, or PyinfraError for an unusable key
            return e
        return None

    greenlets = {state.pool.spawn(connect, host): host for host in hosts}
    gevent.joinall(list(greenlets))
    unreachable = {}
    for greenlet, host in greenlets.items():
        error = greenlet.value
        if error is None and host.connected:
            state.activate_host(host)
            continue
        if error is None:
            error = greenlet.exception or RuntimeError("not connected")
        unreachable[host.name] = why(host, error)
    return unreachable


def sudo_problems(state: Any, hosts: list[Any], targets: dict[str, HostTarget]) -> dict[str, str]:
    """{name: why} of the `hosts` whose login user cannot use sudo without a password (root
    needs none), probed side by side."""
    import gevent

    needs_sudo = [h for h in hosts if targets[h.name].user != "root"]
    greenlets = {state.pool.spawn(sudo_problem, host, targets[host.name]): host for host in needs_sudo}
    gevent.joinall(list(greenlets))
    problems = {}
    for greenlet, host in greenlets.items():
        problem = greenlet.value if greenlet.successful() else one_line(greenlet.exception)
        if problem:
            problems[host.name] = problem
    return problems


def check_local_files(target: HostTarget) -> str | None:
    """Problems with the controller-side files a connection needs, before any network traffic."""
    if target.known_hosts is not None and not Path(target.known_hosts).is_file():
        return (
            f"cannot check the host key of {where(target)}: {display_path(target.known_hosts)} "
            f"does not exist — pin the host's key there first"
        )
    if target.key_path is not None and not Path(target.key_path).is_file():
        return f"SSH key {display_path(target.key_path)} for {target.name} does not exist"
    return None


# sudo preflight ---------------------------------------------------------------------------
#
# Always exits 0 and never lets sudo's own messages through: pyinfra's connector calls
# getpass() (a blocking terminal prompt) when a failed command printed
# "sudo: a password is required", even in API mode.
SUDO_PROBE = (
    "if ! command -v sudo >/dev/null 2>&1; then echo COMMONSTACK_SUDO=missing; "
    "elif sudo -n true >/dev/null 2>&1; then echo COMMONSTACK_SUDO=ok; "
    "else echo COMMONSTACK_SUDO=password; fi"
)


def sudo_problem(host: Any, target: HostTarget) -> str | None:
    """None when ``target.user`` can run ``sudo`` without a password on ``host``."""
    from .pyinfra_api import StringCommand

    try:
        status, output = host.run_shell_command(StringCommand(SUDO_PROBE))
    except Exception as e:  # socket/SSH errors
        return f"cannot run commands on {where(target)} as {target.user}: {one_line(e)}"
    answer = next(
        (
            line.split("=", 1)[1]
            for line in output.stdout_lines
            if line.startswith("COMMONSTACK_SUDO=")
        ),
        None,
    )
    if answer == "ok":
        return None
    if answer == "missing":
        return (
            f"{target.name}: connected as {target.user}, but sudo is not installed — connect "
            f"as root, or install sudo and let {target.user} use it without a password"
        )
    if answer == "password":
        return (
            f"{target.name}: {target.user} cannot use sudo without a password — add "
            f"'{target.user} ALL=(ALL) NOPASSWD: ALL' in /etc/sudoers.d/, or connect as root"
        )
    detail = one_line(output.stderr) or one_line(output.stdout) or "no output"
    return f"cannot run commands on {where(target)} as {target.user}: {detail}"
