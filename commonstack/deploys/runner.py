"""Drive pyinfra 3.10 programmatically for ``commonstack plan`` and ``commonstack deploy``.

    results = plan(targets, add_operations)            # connect, detect changes, change nothing
    results = apply(targets, add_operations)           # converge every host, in parallel

``add_operations`` is called once per host inside pyinfra's context, exactly like a pyinfra
deploy file: it calls operations and ``@deploy`` functions (``files.put(...)``,
``server.shell(...)``) and reads ``host.data``. pyinfra 3.10 identifies an operation by its
*position* in each host's sequence (API mode, pyinfra issue #1370): operations at the same
position on two hosts share one identity and run side by side. Hosts whose sequences differ
(different services) must keep unrelated operations apart by adding a marker to that
identity (``host.loop_position``, as deploys/stack.py does per layer). The runner reports
each host's operations under the name that host gave them.

How this mirrors the ``pyinfra`` CLI (pyinfra_cli/cli.py ``_main``), step by step:

1. A fresh ``State(check_for_changes=True)`` + ``Inventory`` + ``Config`` per run
   (``state.init``). ``check_for_changes`` makes pyinfra evaluate every operation while
   preparing (facts are read, nothing is executed), which gives ``will_change`` for
   ``plan`` and surfaces template/argument errors of ``apply`` before any host is touched.
2. Connect: like ``pyinfra.api.connect.connect_all`` (``host.connect`` in ``state.pool``,
   ``state.activate_host``), but each host's exception is kept and classified into one
   line (``connect.py``) instead of aborting the run, and a non-root user gets a
   ``sudo -n`` preflight.
3. Prepare: like ``pyinfra_cli.util._parallel_load_hosts`` — one greenlet per host with
   ``ctx_config.use(state.config.copy())`` and ``ctx_host.use(host)``, calling
   ``add_operations``; an exception fails that host only.
4. plan: report ``operation_meta.will_change`` per operation — with ``_if=`` conditions
   applied, which pyinfra itself only evaluates while executing (see ``_plan_conditions``)
   — plus a unified diff for the files that ``files.put``/``files.template`` would upload
   (the current content is read with a read-only fact, the desired content is the upload's
   source).
5. apply: ``pyinfra.api.operations.run_ops(state)`` (default mode: each operation on all
   hosts in parallel, waiting for every host between operations), then
   ``operation_meta.did_change()`` per operation; finally ``disconnect_all``.

Failures: one host's failure never stops the others (``Config.FAIL_PERCENT=None``). With
``fail_fast=True`` ``FAIL_PERCENT`` is 0: pyinfra then stops *between* operations — the
operation during which a host failed still finishes on every other host, and nothing after
it runs anywhere (pyinfra cannot abort an operation that is already running on a host). A
host that cannot be connected/prepared with ``fail_fast`` means no host is changed at all.

Statuses: ``unreachable`` = no trusted, authenticated SSH session (network, host key,
login, missing key/known_hosts file); ``failed`` = a session but something went wrong
(sudo, preparing, an operation, or stopped by ``fail_fast``); otherwise ``changed`` /
``unchanged`` (for ``plan``: would change / would not).

Host keys are checked strictly (``ssh_strict_host_key_checking="yes"``, pyinfra's
``StrictPolicy``) against ``HostTarget.known_hosts`` (``ssh_known_hosts_file``); nothing is
ever added to a known_hosts file. ``~/.ssh/config`` is honoured as by pyinfra
(ProxyJump, HostName...), but user, port, key and known_hosts come from the ``HostTarget``.

Other pyinfra 3.10 quirks handled here: ``get_host_keys`` memoizes each known_hosts file
for the life of the process (cleared at the start of every run, so a re-pinned key is seen);
the SSH connector's ``disconnect()`` leaves the paramiko client open (closed after every
run); a command failing with "sudo: a password is required" makes the connector call
``getpass()`` even in API mode (refused during a run: the operation fails instead of
blocking on a hidden prompt); an exception raised by an operation's code while executing
escapes ``run_ops`` and ends the run for every host (contained to its host and operation).

Secrets and logging: operation arguments (template data) may carry secrets, and pyinfra
logs command lines, arguments and command output (``logger.info/debug/error``). For the
duration of a run the ``pyinfra`` and ``paramiko`` loggers get ``propagate=False``, level
WARNING and a single in-memory handler (any handler configured on them is detached and
restored afterwards), so nothing of theirs reaches the terminal. The runner reports
progress only through ``on_progress`` with host and operation names (never arguments,
commands or output). Errors and diffs are returned, not printed: pass
``redact=[secret values...]`` to have them replaced by ``********`` in ``HostResult.error``
and ``OperationChange.diff`` (a diff of a config file otherwise shows the secret it
contains).

gevent: ``gevent.monkey.patch_all()`` must run before anything imports ``ssl`` — and
importing pyinfra imports ssl. So this module patches at its very top, and it must be
imported before any module that imports pyinfra (e.g. the ``@deploy`` modules). The CLI
must import it lazily, inside the ``plan``/``deploy`` commands and before the deploy
modules, so that ``commonstack --help`` and the offline commands stay fast and unpatched.
Drive the runner from the main thread. The patch is process-wide (threading included):
tests run the runner in a child interpreter (tests/unit/test_runner.py) because a pytest
process has imported ssl already and a pytest-xdist worker breaks once threading is patched.
"""

from __future__ import annotations

from gevent import monkey

if not monkey.is_module_patched("socket"):
    monkey.patch_all()

import base64  # noqa: E402
import binascii  # noqa: E402
import difflib  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
from collections.abc import Callable, Collection, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Literal  # noqa: E402

import gevent  # noqa: E402
from pyinfra.api import (  # noqa: E402
    BaseStateCallback,
    Config,
    FactBase,
    FileUploadCommand,
    Inventory,
    QuoteString,
    State,
    StringCommand,
)
from pyinfra.api.command import PyinfraCommand  # noqa: E402
from pyinfra.api.connect import disconnect_all  # noqa: E402
from pyinfra.api.exceptions import PyinfraError  # noqa: E402
from pyinfra.api.facts import get_fact  # noqa: E402
from pyinfra.api.operations import run_ops  # noqa: E402
from pyinfra.api.state import StateStage  # noqa: E402
from pyinfra.api.util import get_file_io  # noqa: E402
from pyinfra.connectors.sshuserclient.client import get_host_keys  # noqa: E402
from pyinfra.connectors.util import CommandOutput  # noqa: E402
from pyinfra.context import ctx_config, ctx_host, ctx_inventory, ctx_state  # noqa: E402

from commonstack.inventories.secrets import redact  # noqa: E402
from commonstack.inventories.targets import HostTarget  # noqa: E402

from .connect import (  # noqa: E402
    check_local_files,
    describe_connect_error,
    one_line,
    sudo_problem,
)

__all__ = ["HostTarget", "OperationChange", "HostResult", "RunnerError", "plan", "apply"]

log = logging.getLogger(__name__)

Status = Literal["changed", "unchanged", "failed", "unreachable"]


@dataclass
class OperationChange:
    host: str
    name: str
    changed: bool
    diff: str | None = None  # unified diff of file content for files.put/template when known


@dataclass
class HostResult:
    name: str
    status: Status
    operations: list[OperationChange] = field(default_factory=list)
    error: str | None = None  # ONE clear human line


class RunnerError(Exception):
    """A problem with the run itself (bad targets, diverging operation lists, a pyinfra bug),
    as opposed to a problem with one host (reported in its HostResult)."""


def plan(
    targets: list[HostTarget],
    add_operations: Callable[[], None],
    on_progress: Callable[[str], None] | None = None,
    *,
    redact: Collection[str] = (),
) -> list[HostResult]:
    """Connect, add the operations and report what would change (with diffs). Changes nothing:
    only pyinfra facts (read-only commands) run on the hosts."""
    return _Run(targets, add_operations, on_progress, redact, execute=False).run()


def apply(
    targets: list[HostTarget],
    add_operations: Callable[[], None],
    on_progress: Callable[[str], None] | None = None,
    fail_fast: bool = False,
    *,
    redact: Collection[str] = (),
) -> list[HostResult]:
    """Converge every host (in parallel) and report what each operation changed."""
    return _Run(
        targets, add_operations, on_progress, redact, execute=True, fail_fast=fail_fast
    ).run()


# --- quiet logging ---------------------------------------------------------------------------

_PREFIX = re.compile(r"^\[(?P<host>[^\]]+)\]\s*(?:nested\s+)?(?P<message>.*)$", re.DOTALL)
_QUIET_LOGGERS = ("pyinfra", "pyinfra_cli", "paramiko")


class _Capture(logging.Handler):
    """Keeps pyinfra's warnings/errors in memory, by host, for error lines; prints nothing."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.by_host: dict[str, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            return
        match = _PREFIX.match(message)
        if match:
            self.by_host.setdefault(match["host"].strip(), []).append(match["message"])


@contextmanager
def _quiet_logging() -> Iterator[_Capture]:
    capture = _Capture()
    saved = []
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate, list(logger.handlers)))
        logger.handlers = [capture]
        logger.propagate = False
        logger.setLevel(logging.WARNING)
    try:
        yield capture
    finally:
        for logger, level, propagate, handlers in saved:
            logger.handlers = handlers
            logger.propagate = propagate
            logger.setLevel(level)


SUDO_PROMPT_REFUSED = "sudo asked for a password"
_FACT_FAILED = "Error: could not load fact: "


@contextmanager
def _no_prompts() -> Iterator[None]:
    """Never block on a hidden terminal prompt.

    pyinfra's connector calls ``getpass()`` when a command fails with "sudo: a password is
    required" (even in API mode). The preflight already requires passwordless sudo; should a
    sudo rule still ask for a password, the command fails with a clear error instead.
    """
    import pyinfra.connectors.util as connector_util

    original = connector_util.getpass

    def refuse(prompt: str = "", stream: Any = None) -> str:
        raise OSError(SUDO_PROMPT_REFUSED)

    connector_util.getpass = refuse
    try:
        yield
    finally:
        connector_util.getpass = original


# --- reading a remote file for diffs ---------------------------------------------------------

_MISSING = "__COMMONSTACK_NO_SUCH_FILE__"


class RemoteFileBase64(FactBase):
    """The exact bytes of a remote file (base64 on the wire), ``_MISSING`` when there is no
    such file, ``None`` (the default) when it could not be read. Read-only."""

    def command(self, path):
        return StringCommand(
            "if [ -f",
            QuoteString(path),
            "]; then base64 -w 0 <",
            QuoteString(path),
            f"&& echo; else echo {_MISSING}; fi",
        )

    def process(self, output):
        text = "".join(output).strip()
        if text == _MISSING:
            return _MISSING
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None


def _unified_diff(dest: str, current: bytes | None, desired: bytes) -> str | None:
    """A unified diff, or None when it cannot be shown as text (binary content)."""
    try:
        old = "" if current is None else current.decode("utf-8")
        new = desired.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\0" in old or "\0" in new:
        return None
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile="/dev/null" if current is None else f"{dest} (current)",
        tofile=f"{dest} (desired)",
    )
    out = []
    for line in lines:
        if not line.endswith("\n"):
            line += "\n\\ No newline at end of file\n"
        out.append(line)
    return "".join(out) or None


# --- failing an operation cleanly ------------------------------------------------------------


class _FailedCommand(PyinfraCommand):
    """Yielded in place of an exception raised while an operation generates its commands
    during execution: pyinfra then fails that operation on that host only (instead of the
    exception escaping ``run_ops`` and ending the run for every host)."""

    def execute(self, state, host, connector_arguments):
        return False


def _guard_generator(generator: Callable[[], Iterator], on_error: Callable[[BaseException], None]):
    def guarded() -> Iterator:
        try:
            yield from generator()
        except Exception as e:  # an operation's own code raised: fail just this op
            on_error(e)
            yield _FailedCommand()

    return guarded


class _PlannedCommand(PyinfraCommand):
    """Placeholder "command" of an operation marked complete by a plan (never executed)."""

    def execute(self, state, host, connector_arguments):  # pragma: no cover
        raise RuntimeError("a planned operation cannot be executed")


def _conditions_hold(conditions: Any) -> bool:
    if not conditions:
        return True
    if callable(conditions):
        conditions = [conditions]
    for condition in conditions:
        try:
            ok = bool(condition())
        except Exception:
            would_change = getattr(condition, "would_change", None)
            try:
                ok = bool(would_change()) if callable(would_change) else True
            except Exception:
                ok = True
        if not ok:
            return False
    return True


# --- progress -------------------------------------------------------------------------------


class _Progress(BaseStateCallback):
    def __init__(self, run: _Run) -> None:
        self.run = run

    def operation_start(self, state, op_hash):
        self.run.progress(f"operation: {self.run.op_name(state, op_hash)}")

    def operation_host_error(self, state, host, op_hash, retry_count=0, max_retries=0):
        self.run.progress(f"{host.name}: FAILED {self.run.op_name(state, op_hash, host)}")


# --- the run ---------------------------------------------------------------------------------


class _Run:
    def __init__(
        self,
        targets: list[HostTarget],
        add_operations: Callable[[], None],
        on_progress: Callable[[str], None] | None,
        redact: Collection[str],
        execute: bool,
        fail_fast: bool = False,
    ) -> None:
        _validate(targets)
        self.targets = list(targets)
        self.by_name = {t.name: t for t in self.targets}
        self.add_operations = add_operations
        self.on_progress = on_progress
        self.secrets = list(redact)
        self.execute = execute
        self.fail_fast = fail_fast
        # name -> (status, error) for hosts that did not make it
        self.outcome: dict[str, tuple[Status, str]] = {}
        self.op_errors: dict[tuple[str, str], str] = {}  # (host, op_hash) -> detail
        self.diffs: dict[tuple[str, str], str | None] = {}
        self.planned: dict[tuple[str, str], bool] = {}  # plan: (host, op_hash) -> would change
        self.prepared: set[str] = set()  # hosts whose operations were all added
        self.capture: _Capture | None = None

    # helpers ------------------------------------------------------------------------------

    def progress(self, message: str) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(self.redact(message))
        except Exception:  # a broken progress printer must not break a deploy
            log.debug("on_progress raised", exc_info=True)

    @staticmethod
    def op_name(state: State, op_hash: str, host=None) -> str:
        """The operation's name as `host` added it (pyinfra merges the names of all hosts)."""
        meta = state.op_meta.get(op_hash)
        if meta is None or not meta.names:
            return "operation"
        if host is not None and len(meta.names) > 1:
            own = state.get_op_data_for_host(host, op_hash).global_arguments.get("name")
            matching = [n for n in meta.names if own and (n == own or n.endswith(f" | {own}"))]
            if matching:
                return matching[0]
        return " / ".join(sorted(meta.names))

    def redact(self, text: str | None) -> str | None:
        return None if text is None else redact(text, self.secrets)

    def fail(self, state: State, host, status: Status, error: str) -> None:
        if host.name not in self.outcome:
            self.outcome[host.name] = (status, one_line(self.redact(error), limit=1000))
        state.active_hosts.discard(host)
        state.failed_hosts.add(host)
        self.progress(f"{host.name}: {status}")

    def logged_errors(self, host) -> list[str]:
        """pyinfra's error log lines for ``host``, cleaned up (last = most recent).

        A failed fact is logged as its output lines followed by "Error: could not load
        fact: NAME args..."; that becomes "could not read NAME: <last output line>" (the
        arguments, which may be a whole command line, are left out).
        """
        messages = self.capture.by_host.get(host.name, []) if self.capture else []
        found: list[str] = []
        output: list[str] = []
        for message in (one_line(m) for m in messages):
            if not message:
                continue
            if message.startswith(_FACT_FAILED):
                fact = (message[len(_FACT_FAILED) :].split() or ["a fact"])[0]
                detail = output[-1] if output else "no output"
                found.append(f"could not read {fact}: {detail}")
                output = []
            elif message.startswith("Error: executed") or message in ("Error", "Error:"):
                output = []
            elif SUDO_PROMPT_REFUSED in message:
                user = self.by_name[host.name].user
                found.append(
                    f"sudo asked for a password — let {user} use sudo without a password "
                    "(NOPASSWD) or connect as root"
                )
            else:
                output.append(message)
                found.append(message)
        return found

    # stages -------------------------------------------------------------------------------

    def run(self) -> list[HostResult]:
        if not self.targets:
            return []
        get_host_keys.cache.clear()  # pyinfra memoizes known_hosts files per process
        with _quiet_logging() as capture, _no_prompts():
            self.capture = capture
            try:
                state = self._make_state()
            except PyinfraError as e:  # e.g. host data of the wrong type for pyinfra
                raise RunnerError(f"cannot set up the pyinfra inventory: {one_line(e)}") from e
            try:
                with ctx_state.use(state), ctx_inventory.use(state.inventory):
                    return self._run(state)
            finally:
                self._disconnect(state)

    def _run(self, state: State) -> list[HostResult]:
        state.set_stage(StateStage.Connect)
        self._connect(state)
        self._preflight(state)

        state.set_stage(StateStage.Prepare)
        if state.active_hosts:
            self._prepare(state)
            if not self.execute:
                self._plan_conditions(state)
            self._compute_diffs(state)
            for host in sorted(state.active_hosts, key=lambda h: h.name):
                ops = state.ops[host]
                if self.execute:
                    self.progress(f"{host.name}: {len(ops)} operations")
                else:
                    changes = sum(1 for h, d in ops.items() if self._will_change(host, h, d))
                    self.progress(f"{host.name}: {len(ops)} operations, {changes} would change")

        if self.execute and state.active_hosts:
            if self.fail_fast and self.outcome:
                first, (first_status, _) = next(iter(self.outcome.items()))
                why = "is unreachable" if first_status == "unreachable" else "failed"
                for host in list(state.active_hosts):
                    self.fail(
                        state,
                        host,
                        "failed",
                        f"not started on {host.name}: {first} {why} and fail_fast is set",
                    )
            else:
                state.set_stage(StateStage.Execute)
                self._execute(state)

        state.set_stage(StateStage.Disconnect)
        return [self._result(state, t) for t in self.targets]

    def _make_state(self) -> State:
        names = []
        for t in self.targets:
            data = dict(t.data)
            data.update(
                ssh_hostname=t.address,
                ssh_port=int(t.port),
                ssh_user=t.user,
                ssh_strict_host_key_checking="yes",
            )
            if t.known_hosts is not None:
                data["ssh_known_hosts_file"] = str(t.known_hosts)
            if t.key_path is not None:
                data["ssh_key"] = str(t.key_path)
            if t.user != "root":
                data["_sudo"] = True  # pyinfra reads global-argument defaults from host data
            names.append((t.name, data))

        inventory = Inventory((names, {}))
        config = Config(FAIL_PERCENT=0 if self.fail_fast else None)
        state = State(check_for_changes=True)
        state.init(inventory, config)
        state.add_callback_handler(_Progress(self))
        return state

    def _connect(self, state: State) -> None:
        hosts = []
        for host in state.inventory:
            problem = check_local_files(self.by_name[host.name])
            if problem:
                self.fail(state, host, "unreachable", problem)
            else:
                hosts.append(host)
        if not hosts:
            return
        self.progress(f"connecting to {', '.join(h.name for h in hosts)}")

        def connect(host):
            try:
                host.connect(show_errors=False, raise_exceptions=True)
            except Exception as e:  # ConnectError, or PyinfraError for an unusable key
                return e
            return None

        greenlets = {state.pool.spawn(connect, host): host for host in hosts}
        gevent.joinall(list(greenlets))
        for greenlet, host in greenlets.items():
            error = greenlet.value
            if error is None and host.connected:
                state.activate_host(host)
                self.progress(f"{host.name}: connected")
                continue
            if error is None:
                error = greenlet.exception or RuntimeError("not connected")
            target = self.by_name[host.name]
            offered = _offered_host_key(host)
            self.fail(
                state,
                host,
                "unreachable",
                describe_connect_error(target, error, offered, state.config.CONNECT_TIMEOUT),
            )

    def _preflight(self, state: State) -> None:
        needs_sudo = [h for h in state.active_hosts if self.by_name[h.name].user != "root"]
        if not needs_sudo:
            return
        greenlets = {
            state.pool.spawn(sudo_problem, host, self.by_name[host.name]): host
            for host in needs_sudo
        }
        gevent.joinall(list(greenlets))
        for greenlet, host in greenlets.items():
            problem = greenlet.value if greenlet.successful() else one_line(greenlet.exception)
            if problem:
                self.fail(state, host, "failed", problem)

    def _prepare(self, state: State) -> None:
        hosts = list(state.active_hosts)
        self.progress(f"preparing operations on {', '.join(sorted(h.name for h in hosts))}")

        def prepare(host):
            with ctx_config.use(state.config.copy()), ctx_host.use(host):
                try:
                    self.add_operations()
                except Exception as e:
                    log.debug("add_operations failed on %s", host.name, exc_info=True)
                    return e
            return None

        greenlets = {state.pool.spawn(prepare, host): host for host in hosts}
        gevent.joinall(list(greenlets))
        for greenlet, host in greenlets.items():
            error = greenlet.value if greenlet.successful() else greenlet.exception
            failing = f"preparing operations on {host.name} failed"
            if host in state.failed_hosts:  # a fact could not be read (pyinfra failed the host)
                logged = self.logged_errors(host)
                detail = logged[-1] if logged else one_line(error) if error else "unknown error"
                self.fail(state, host, "failed", f"{failing}: {detail}")
            elif error is not None:
                # The operation being added when it raised has no data for this host yet.
                last = host.op_hash_order[-1] if host.op_hash_order else None
                if last is not None and last not in state.ops[host]:
                    failing += f" at {self.op_name(state, last)!r}"
                elif last is not None:
                    failing += f" after {self.op_name(state, last)!r}"
                detail = one_line(error) or type(error).__name__
                if not isinstance(error, (PyinfraError, OSError)):
                    detail = f"{type(error).__name__}: {detail}"
                self.fail(state, host, "failed", f"{failing}: {detail}")
            else:
                self.prepared.add(host.name)

    def _will_change(self, host, op_hash: str, op_data) -> bool:
        planned = self.planned.get((host.name, op_hash))
        if planned is not None:
            return planned
        return bool(op_data.operation_meta._maybe_is_change)

    def _plan_conditions(self, state: State) -> None:
        """Apply ``_if=`` conditions to the plan.

        pyinfra evaluates ``_if`` only while executing, so ``will_change`` of a conditional
        operation (typically ``server.shell(..., _if=<a config changed>)``) is always True
        in a plan. Here each host's operations are walked in order and every operation is
        marked complete with its *planned* result (``set_complete``: ``did_change()`` then
        answers "would change"), so conditions built on ``did_change()`` of earlier
        operations evaluate as they will during the run. A condition that cannot be
        evaluated yet falls back to its ``would_change()`` method if it has one, else
        counts as true (the plan then over-reports, never under-reports).
        """

        def walk(host):
            with ctx_config.use(state.config.copy()), ctx_host.use(host):
                for op_hash in host.op_hash_order:
                    op_data = state.ops[host].get(op_hash)
                    if op_data is None:
                        continue
                    meta = op_data.operation_meta
                    will = bool(meta._maybe_is_change)
                    if will:
                        will = _conditions_hold(op_data.global_arguments.get("_if"))
                    self.planned[(host.name, op_hash)] = will
                    if not meta.is_complete():
                        meta.set_complete(
                            True, [_PlannedCommand()] if will else [], CommandOutput([])
                        )

        greenlets = [state.pool.spawn(walk, host) for host in list(state.active_hosts)]
        gevent.joinall(greenlets)
        for greenlet in greenlets:
            if not greenlet.successful():
                log.debug("planning conditions failed: %r", greenlet.exception)

    def _compute_diffs(self, state: State) -> None:
        def diffs_for(host):
            found: dict[tuple[str, str], str | None] = {}
            with ctx_config.use(state.config.copy()), ctx_host.use(host):
                for op_hash, op_data in state.ops[host].items():
                    if not self._will_change(host, op_hash, op_data):
                        continue
                    try:
                        found[(host.name, op_hash)] = self._diff_of(state, host, op_data)
                    except Exception:
                        log.debug("no diff for %s on %s", op_hash, host.name, exc_info=True)
            return found

        greenlets = [state.pool.spawn(diffs_for, host) for host in list(state.active_hosts)]
        gevent.joinall(greenlets)
        for greenlet in greenlets:
            if greenlet.successful():
                self.diffs.update(greenlet.value)

    def _diff_of(self, state: State, host, op_data) -> str | None:
        uploads = [c for c in op_data.command_generator() if isinstance(c, FileUploadCommand)]
        if not uploads:
            return None
        parts = []
        for upload in uploads:
            with get_file_io(upload.src, "rb") as f:
                desired = f.read()
            if isinstance(desired, str):
                desired = desired.encode()
            current = get_fact(
                state,
                host,
                RemoteFileBase64,
                kwargs={"path": upload.dest},
                apply_failed_hosts=False,
            )
            if current is None:  # could not read it: unknown
                return None
            diff = _unified_diff(upload.dest, None if current == _MISSING else current, desired)
            if diff is None:
                return None
            parts.append(diff)
        return "".join(parts) or None

    def _execute(self, state: State) -> None:
        # Contain exceptions raised by operation code during execution to their host.
        for host in state.active_hosts:
            for op_hash, op_data in state.ops[host].items():
                op_data.command_generator = _guard_generator(
                    op_data.command_generator,
                    lambda e, key=(host.name, op_hash): self.op_errors.setdefault(
                        key,
                        f"{type(e).__name__}: {one_line(e)}"
                        if not isinstance(e, PyinfraError)
                        else one_line(e),
                    ),
                )
        self.progress("applying")
        try:
            run_ops(state)
        except PyinfraError as e:
            # "No hosts remaining!" (every host failed) or, with fail_fast,
            # "Over 0% of hosts failed": pyinfra stopped between two operations.
            log.debug("run_ops stopped: %s", e)
        except Exception as e:
            raise RunnerError(
                f"pyinfra failed unexpectedly: {type(e).__name__}: {one_line(e)}"
            ) from e

        for host in list(state.failed_hosts):
            if host.name not in self.outcome:
                self.fail(state, host, "failed", self._operation_error(state, host))
        # fail_fast: hosts still "active" but stopped before their last operation.
        first_failed = next((n for n, (s, _) in self.outcome.items() if s == "failed"), None)
        for host in list(state.active_hosts):
            metas = [d.operation_meta for d in state.ops[host].values()]
            done = sum(1 for m in metas if m.is_complete())
            if done < len(metas):
                self.fail(
                    state,
                    host,
                    "failed",
                    f"stopped on {host.name} after {done} of {len(metas)} operations: "
                    f"{first_failed or 'another host'} failed and fail_fast is set",
                )

    def _operation_error(self, state: State, host) -> str:
        for op_hash in host.op_hash_order:
            op_data = state.ops[host].get(op_hash)
            if op_data is None:
                continue
            meta = op_data.operation_meta
            if meta.is_complete() and meta.did_error():
                name = self.op_name(state, op_hash, host)
                detail = self.op_errors.get((host.name, op_hash))
                if detail is None:
                    stderr = [line for line in meta.stderr_lines if line.strip()]
                    stdout = [line for line in meta.stdout_lines if line.strip()]
                    logged = self.logged_errors(host)
                    detail = (
                        one_line(stderr[-1])
                        if stderr
                        else one_line(stdout[-1])
                        if stdout
                        else logged[-1]
                        if logged
                        else "it failed without output"
                    )
                return f"operation {name!r} failed on {host.name}: {detail}"
        logged = self.logged_errors(host)
        return f"{host.name} failed: {logged[-1] if logged else 'unknown error'}"

    def _result(self, state: State, target: HostTarget) -> HostResult:
        host = state.inventory.get_host(target.name)
        status_error = self.outcome.get(target.name)
        if status_error and status_error[0] == "unreachable":
            return HostResult(target.name, "unreachable", [], status_error[1])

        operations = []
        # A host that failed before its operations were all added reports none of them.
        op_hashes = host.op_hash_order if target.name in self.prepared else []
        for op_hash in op_hashes:
            op_data = state.ops[host].get(op_hash)
            if op_data is None:  # e.g. a _run_once operation that ran on another host
                continue
            meta = op_data.operation_meta
            if self.execute:
                if not meta.is_complete():
                    continue
                changed = meta.did_change()
            else:
                changed = self._will_change(host, op_hash, op_data)
            diff = self.diffs.get((target.name, op_hash)) if changed else None
            operations.append(
                OperationChange(
                    host=target.name,
                    name=self.op_name(state, op_hash, host),
                    changed=changed,
                    diff=self.redact(diff),
                )
            )

        if status_error:
            return HostResult(target.name, status_error[0], operations, status_error[1])
        changed_any = any(op.changed for op in operations)
        return HostResult(target.name, "changed" if changed_any else "unchanged", operations, None)

    def _disconnect(self, state: State) -> None:
        try:
            with ctx_state.use(state):
                disconnect_all(state)
        except Exception:
            log.debug("disconnect_all failed", exc_info=True)
        # pyinfra's SSH connector's disconnect() does not close the paramiko client.
        for host in state.inventory:
            client = getattr(getattr(host, "connector", None), "client", None)
            if client is not None:
                try:
                    client.close()
                except Exception:
                    pass


def _offered_host_key(host) -> Any:
    """The host key the server presented, if the handshake got that far."""
    try:
        transport = host.connector.client.get_transport()
        return transport.get_remote_server_key() if transport is not None else None
    except Exception:
        return None


def _validate(targets: list[HostTarget]) -> None:
    seen = set()
    for t in targets:
        if not isinstance(t, HostTarget):
            raise RunnerError(f"not a HostTarget: {t!r}")
        if not t.name or t.name.startswith("@"):
            raise RunnerError(f"invalid host name {t.name!r}")
        if t.name in seen:
            raise RunnerError(f"two targets are named {t.name!r}")
        seen.add(t.name)
        if not t.address:
            raise RunnerError(f"host {t.name!r} has no address")
        if not (0 < int(t.port) < 65536):
            raise RunnerError(f"host {t.name!r}: invalid port {t.port!r}")
        clashing = sorted(k for k in t.data if k.startswith("ssh_"))
        if clashing:
            raise RunnerError(
                f"host {t.name!r}: data must not set {', '.join(clashing)} "
                "(use HostTarget.address/user/port/key_path/known_hosts)"
            )
