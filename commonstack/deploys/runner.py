"""Drive pyinfra 3.10 programmatically for ``commonstack plan`` and ``commonstack deploy``.

    results = plan(targets, add_operations)            # connect, detect changes, change nothing
    results = apply(targets, add_operations)           # converge every host, in parallel

``add_operations`` is called for each host inside pyinfra's context, exactly like a pyinfra
deploy file: it calls operations and ``@deploy`` functions (``files.put(...)``,
``server.shell(...)``) and reads ``host.data`` and facts. It may be called more than once per
host (fact discovery, below): it must not change anything itself; its last call for a host is
the one whose operations run. pyinfra 3.10 identifies an operation by its *position* in each
host's sequence (API mode, pyinfra issue #1370): operations at the same position on two hosts
share one identity and run side by side. Hosts whose sequences differ (different services)
must keep unrelated operations apart by adding a marker to that identity
(``host.loop_position``, as deploys/stack.py does per layer). The runner reports each host's
operations under the name that host gave them.

A run, stage by stage, as the ``pyinfra`` CLI does it (pyinfra_cli/cli.py ``_main``):

1. A fresh ``State(check_for_changes=True)`` + ``Inventory`` + ``Config`` per run.
   ``check_for_changes`` makes pyinfra evaluate every operation while preparing (facts are
   read, nothing is executed), which gives ``will_change`` for ``plan`` and surfaces
   template/argument errors of ``apply`` before any host is touched.
2. Connect (connect.py): like ``pyinfra.api.connect.connect_all``, but each host's exception
   is kept and explained in one line instead of aborting the run; a non-root user gets a
   ``sudo -n`` preflight. A plan connects a host whose early batch opened (early_batch.py:
   key, login and sudo accepted) on first use: a no-op plan the batch answers wholly opens no
   connection of pyinfra's.
3. Read the facts the operations will ask for, a few batched remote commands per host
   (prefetch.py), instead of pyinfra's one round trip per fact.
4. Prepare: like ``pyinfra_cli.util._parallel_load_hosts``: one greenlet per host calling
   ``add_operations``; an exception fails that host only.
5. plan: per operation ``will_change`` with ``_if=`` conditions applied, and a unified diff of
   each file an upload would change (preview.py).
6. apply: ``pyinfra.api.operations.run_ops(state)`` (each operation on all hosts in parallel,
   waiting for every host between operations), then ``did_change()`` per operation.

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

Secrets and logging: operation arguments (template data) may carry secrets, and pyinfra logs
command lines, arguments and output; nothing of its log reaches the terminal (run_log.py). The
runner reports progress only through ``on_progress`` with host and operation names (never
arguments, commands or output). Errors and diffs are returned, not printed: pass
``redact=[secret values...]`` to have them replaced by ``********`` in ``HostResult.error`` and
``OperationChange.diff`` (a diff of a config file otherwise shows the secret it contains).

pyinfra's undocumented internals that the runner relies on are all in pyinfra_api.py, which
checks the pinned pyinfra release.

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

from importlib import metadata

from gevent import monkey


def _patch_all() -> None:
    """``monkey.patch_all()``, with the installed packages' entry points read once: gevent looks
    for its plugins 27 times while patching, each a read of every package's metadata (0.11 s
    together here, with the tests' packages installed)."""
    read = metadata.entry_points
    installed = read()
    metadata.entry_points = lambda **selection: installed.select(**selection)
    try:
        monkey.patch_all()
    finally:
        metadata.entry_points = read


if not monkey.is_module_patched("socket"):
    _patch_all()

import logging  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Collection, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Literal  # noqa: E402

import gevent  # noqa: E402

from commonstack.inventories.secrets import redact  # noqa: E402
from commonstack.inventories.targets import HostTarget  # noqa: E402

from . import preview  # noqa: E402
from . import pyinfra_api as api  # noqa: E402
from .connect import check_local_files, connect_all, one_line, sudo_problems, transport_without_delay  # noqa: E402
from .early_batch import EarlyBatch, opened  # noqa: E402
from .fact_memory import Commands, FactMemory, where  # noqa: E402
from .prefetch import FactAnswers, asked_commands, batch_of, discover, recording  # noqa: E402
from .run_log import SUDO_PROMPT_REFUSED, Capture, quiet_logging  # noqa: E402

__all__ = ["HostTarget", "OperationChange", "HostResult", "RunnerError", "plan", "apply"]

log = logging.getLogger(__name__)

Status = Literal["changed", "unchanged", "failed", "unreachable"]


@dataclass
class OperationChange:
    host: str
    name: str
    changed: bool
    diff: str | None = None  # plan: unified diff of the file content an upload would change


@dataclass
class HostResult:
    name: str
    status: Status
    operations: list[OperationChange] = field(default_factory=list)
    error: str | None = None  # ONE clear human line
    commands: int = 0  # remote commands the run sent to the host (fact batches included)


class RunnerError(Exception):
    """A problem with the run itself (bad targets, diverging operation lists, a pyinfra bug),
    as opposed to a problem with one host (reported in its HostResult)."""


def plan(
    targets: list[HostTarget],
    add_operations: Callable[[], None],
    on_progress: Callable[[str], None] | None = None,
    *,
    redact: Collection[str] = (),
    batch_facts: bool = True,
    memory: FactMemory | None = None,
    early: dict[str, EarlyBatch] | None = None,
) -> list[HostResult]:
    """Connect, add the operations and report what would change (with diffs). Changes nothing:
    only pyinfra facts (read-only commands) run on the hosts. `batch_facts=False` reads each
    fact with a command of its own, as pyinfra does. With a `memory`, the commands that read each
    host's facts are remembered for the next run (fact_memory.py); `early`, those already sent
    (early_batch.py)."""
    return _Run(
        targets, add_operations, on_progress, redact, execute=False, batch_facts=batch_facts, memory=memory, early=early
    ).run()


def apply(
    targets: list[HostTarget],
    add_operations: Callable[[], None],
    on_progress: Callable[[str], None] | None = None,
    fail_fast: bool = False,
    *,
    redact: Collection[str] = (),
    batch_facts: bool = True,
    memory: FactMemory | None = None,
) -> list[HostResult]:
    """Converge every host (in parallel) and report what each operation changed. A host that
    changed has its remembered fact commands forgotten: the next plan finds them anew."""
    return _Run(
        targets,
        add_operations,
        on_progress,
        redact,
        execute=True,
        fail_fast=fail_fast,
        batch_facts=batch_facts,
        memory=memory,
    ).run()


class _Progress(api.BaseStateCallback):
    def __init__(self, run: _Run) -> None:
        self.run = run

    def operation_start(self, state, op_hash):
        self.run.progress(f"operation: {self.run.op_name(state, op_hash)}")

    def operation_host_error(self, state, host, op_hash, retry_count=0, max_retries=0):
        self.run.progress(f"{host.name}: FAILED {self.run.op_name(state, op_hash, host)}")


class _Run:
    """One plan or apply: its stages in order (`_stages`), and what each host came to."""

    def __init__(
        self,
        targets: list[HostTarget],
        add_operations: Callable[[], None],
        on_progress: Callable[[str], None] | None,
        redact: Collection[str],
        execute: bool,
        fail_fast: bool = False,
        batch_facts: bool = True,
        memory: FactMemory | None = None,
        early: dict[str, EarlyBatch] | None = None,
    ) -> None:
        _validate(targets)
        self.targets = list(targets)
        self.by_name = {t.name: t for t in self.targets}
        self.add_operations = add_operations
        self.on_progress = on_progress
        self.secrets = list(redact)
        self.execute = execute
        self.fail_fast = fail_fast
        self.batch_facts = batch_facts
        self.memory = memory if batch_facts else None
        self.early = early if batch_facts else None
        self.outcome: dict[str, tuple[Status, str]] = {}  # name -> (status, error) of hosts that did not make it
        self.op_errors: dict[tuple[str, str], str] = {}  # (host, op_hash) -> what the operation's code raised
        self.planned: dict[tuple[str, str], bool] = {}  # plan: (host, op_hash) -> would change
        self.diffs: dict[tuple[str, str], str | None] = {}  # plan: (host, op_hash) -> diff
        self.prepared: set[str] = set()  # hosts whose operations were all added
        self.answers = {t.name: FactAnswers() for t in self.targets}
        self.capture = Capture()

    # helpers ------------------------------------------------------------------------------

    def progress(self, message: str) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(self.redact(message))
        except Exception:  # a broken progress printer must not break a deploy
            log.debug("on_progress raised", exc_info=True)

    @staticmethod
    def op_name(state: api.State, op_hash: str, host=None) -> str:
        """The operation's name as `host` added it (pyinfra merges the names of all hosts)."""
        names = api.operation_names(state, op_hash)
        if not names:
            return "operation"
        if host is not None and len(names) > 1:
            own = api.own_name(state, host, op_hash)
            matching = [n for n in names if own and (n == own or n.endswith(f" | {own}"))]
            if matching:
                return matching[0]
        return " / ".join(sorted(names))

    def redact(self, text: str | None) -> str | None:
        return None if text is None else redact(text, self.secrets)

    def fail(self, state: api.State, host, status: Status, error: str) -> None:
        if host.name not in self.outcome:
            self.outcome[host.name] = (status, one_line(self.redact(error), limit=1000))
        state.active_hosts.discard(host)
        state.failed_hosts.add(host)
        self.progress(f"{host.name}: {status}")

    def logged_errors(self, host) -> list[str]:
        return self.capture.errors(host.name, self.by_name[host.name].user)

    # stages -------------------------------------------------------------------------------

    def run(self) -> list[HostResult]:
        if not self.targets:
            return []
        api.forget_known_hosts()
        with quiet_logging() as self.capture, api.refused_password_prompts(SUDO_PROMPT_REFUSED):
            try:
                state = self._make_state()
            except api.PyinfraError as e:  # e.g. host data of the wrong type for pyinfra
                raise RunnerError(f"cannot set up the pyinfra inventory: {one_line(e)}") from e
            for host in state.inventory:
                answers = self.answers[host.name]
                api.intercept_commands(host, lambda run, *args, answers=answers, **kw: answers.run(state, run, *args, **kw))
            try:
                with api.run_context(state):
                    return self._stages(state)
            finally:
                self._disconnect(state)

    def _stages(self, state: api.State) -> list[HostResult]:
        state.set_stage(api.StateStage.Connect)
        with _timed("connect"):
            self._connect(state)

        state.set_stage(api.StateStage.Prepare)
        if state.active_hosts:
            if self.batch_facts:
                with _timed("facts read in batches"):
                    discover(state, self._make_state, self.add_operations, self.answers, self._recalled(state),
                             self.early)  # fmt: skip
            # This run's State is pyinfra's current one again (a discovery pass that waited on
            # something may have left its own).
            with _timed("prepare"), api.run_context(state):
                self._prepare(state)
            if not self.execute:
                with _timed("preview"):
                    self._preview(state)
            for host in sorted(state.active_hosts, key=lambda h: h.name):
                summary = f"{host.name}: {len(state.ops[host])} operations"
                if not self.execute:
                    changes = sum(will for (name, _), will in self.planned.items() if name == host.name)
                    summary += f", {changes} would change"
                self.progress(summary)
                self.progress(f"{host.name}: facts read with {self.answers[host.name].sent} remote commands")

        if self.execute and state.active_hosts:
            if self.fail_fast and self.outcome:
                first, (first_status, _) = next(iter(self.outcome.items()))
                why = "is unreachable" if first_status == "unreachable" else "failed"
                for host in list(state.active_hosts):
                    self.fail(state, host, "failed", f"not started on {host.name}: {first} {why} and fail_fast is set")
            else:
                state.set_stage(api.StateStage.Execute)
                with _timed("execute"):
                    self._execute(state)

        state.set_stage(api.StateStage.Disconnect)
        results = [self._result(state, t) for t in self.targets]
        self._remember(state, results)
        return results

    def _recalled(self, state: api.State) -> dict[str, Commands]:
        if self.memory is None:
            return {}
        return {h.name: self.memory.recall(h.name, self._where(h.name)) for h in state.active_hosts}

    def _remember(self, state: api.State, results: list[HostResult]) -> None:
        """What each host's prepare asked, for the next run; forgotten where a deploy changed the
        host or the run failed on it (its next facts may need other commands). Only a time saver:
        whatever goes wrong here leaves the results as they are."""
        if self.memory is None:
            return
        for result in results:
            try:
                if result.status == "failed" or (self.execute and result.status == "changed"):
                    self.memory.forget(result.name)
                elif result.status != "unreachable":
                    host = state.inventory.get_host(result.name)
                    commands = asked_commands(state, host, self.answers[result.name])
                    self.memory.remember(result.name, self._where(result.name), commands, self.secrets,
                                         lambda kept, host=host: batch_of(state, host, kept).line_and_script)  # fmt: skip
            except Exception as e:
                log.debug("remembering the fact commands of %s failed: %r", result.name, e)

    def _where(self, name: str) -> str:
        return where(self.by_name[name])

    def _make_state(self) -> api.State:
        """A State for this run's targets; the discovery of facts makes more of them (never
        connected), hence no progress callback here."""
        names = []
        for t in self.targets:
            data = dict(t.data)
            data.update(
                ssh_hostname=t.address,
                ssh_port=int(t.port),
                ssh_user=t.user,
                ssh_strict_host_key_checking="yes",
                ssh_paramiko_connect_kwargs={"transport_factory": transport_without_delay},
            )
            if t.known_hosts is not None:
                data["ssh_known_hosts_file"] = str(t.known_hosts)
            if t.key_path is not None:
                data["ssh_key"] = str(t.key_path)
            if t.user != "root":
                data["_sudo"] = True  # pyinfra reads global-argument defaults from host data
            names.append((t.name, data))
        state = api.State(check_for_changes=True)
        state.init(api.Inventory((names, {})), api.Config(FAIL_PERCENT=0 if self.fail_fast else None))
        return state

    def _connect(self, state: api.State) -> None:
        state.add_callback_handler(_Progress(self))
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
        # A plan needs pyinfra's connection to a host whose early batch opened only if the batch
        # does not answer all it asks (a deploy's changes would need it anyway). The hosts without
        # one connect while the batches are waited for.
        early = {} if self.execute else {h.name: self.early[h.name] for h in hosts if h.name in (self.early or {})}
        waiting = state.pool.spawn(opened, early, gevent.sleep)
        unreachable = connect_all(state, [h for h in hosts if h.name not in early], self.by_name)
        on_first_use = waiting.get()
        unreachable |= connect_all(state, [h for h in hosts if h.name in early], self.by_name, on_first_use)
        for host in hosts:
            if host.name in unreachable:
                self.fail(state, host, "unreachable", unreachable[host.name])
            else:
                self.progress(f"{host.name}: connected")
        preflight = [h for h in state.active_hosts if h.name not in on_first_use]  # the batch probed sudo
        for name, problem in sudo_problems(state, preflight, self.by_name).items():
            self.fail(state, state.inventory.get_host(name), "failed", problem)

    def _prepare(self, state: api.State) -> None:
        hosts = list(state.active_hosts)
        self.progress(f"preparing operations on {', '.join(sorted(h.name for h in hosts))}")

        def prepare(host):
            with api.host_context(state, host), recording(host, self.answers[host.name]):
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
            if failure := api.first_use_failure(host):  # connecting on first use (connect.py)
                self.fail(state, host, "unreachable", str(failure))
            elif host in state.failed_hosts:  # a fact could not be read (pyinfra failed the host)
                logged = self.logged_errors(host)
                detail = logged[-1] if logged else one_line(error) if error else "unknown error"
                self.fail(state, host, "failed", f"{failing}: {detail}")
            elif error is not None:
                # The operation being added when it raised has no data for this host yet.
                last, complete = api.last_added(state, host)
                if last is not None:
                    failing += f" {'after' if complete else 'at'} {self.op_name(state, last)!r}"
                detail = one_line(error) or type(error).__name__
                if not isinstance(error, (api.PyinfraError, OSError)):
                    detail = f"{type(error).__name__}: {detail}"
                self.fail(state, host, "failed", f"{failing}: {detail}")
            else:
                self.prepared.add(host.name)

    def _preview(self, state: api.State) -> None:
        self.planned = preview.plan_conditions(state)
        changing = {
            host: [op_hash for op_hash, _ in api.operations_in_order(state, host) if self.planned.get((host.name, op_hash))]
            for host in state.active_hosts
        }
        self.diffs = preview.file_diffs(state, changing, self.answers if self.batch_facts else None)
        for host in list(state.active_hosts):  # the diffs were the first use of its connection
            if failure := api.first_use_failure(host):
                self.fail(state, host, "unreachable", str(failure))

    def _execute(self, state: api.State) -> None:
        def on_error(host_name: str, op_hash: str, e: BaseException) -> None:
            detail = one_line(e) if isinstance(e, api.PyinfraError) else f"{type(e).__name__}: {one_line(e)}"
            self.op_errors.setdefault((host_name, op_hash), detail)

        api.contain_operation_errors(state, on_error)
        self.progress("applying")
        try:
            api.run_ops(state)
        except api.PyinfraError as e:
            # "No hosts remaining!" (every host failed) or, with fail_fast,
            # "Over 0% of hosts failed": pyinfra stopped between two operations.
            log.debug("run_ops stopped: %s", e)
        except Exception as e:
            raise RunnerError(f"pyinfra failed unexpectedly: {type(e).__name__}: {one_line(e)}") from e

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

    def _operation_error(self, state: api.State, host) -> str:
        """One line: the first failed operation of `host` and the last thing it said."""
        for op_hash, op_data in api.operations_in_order(state, host):
            meta = op_data.operation_meta
            if meta.is_complete() and meta.did_error():
                detail = self.op_errors.get((host.name, op_hash))
                if detail is None:
                    stderr = [line for line in meta.stderr_lines if line.strip()]
                    stdout = [line for line in meta.stdout_lines if line.strip()]
                    logged = self.logged_errors(host)
                    said = stderr or stdout
                    detail = one_line(said[-1]) if said else logged[-1] if logged else "it failed without output"
                return f"operation {self.op_name(state, op_hash, host)!r} failed on {host.name}: {detail}"
        logged = self.logged_errors(host)
        return f"{host.name} failed: {logged[-1] if logged else 'unknown error'}"

    def _result(self, state: api.State, target: HostTarget) -> HostResult:
        host = state.inventory.get_host(target.name)
        commands = self.answers[target.name].sent
        status_error = self.outcome.get(target.name)
        if status_error and status_error[0] == "unreachable":
            return HostResult(target.name, "unreachable", [], status_error[1], commands)

        operations = []
        # A host that failed before its operations were all added reports none of them.
        for op_hash, op_data in api.operations_in_order(state, host) if target.name in self.prepared else []:
            meta = op_data.operation_meta
            if self.execute:
                if not meta.is_complete():
                    continue
                changed = meta.did_change()
            else:
                changed = self.planned.get((target.name, op_hash), api.prepared_change(op_data))
            diff = self.diffs.get((target.name, op_hash)) if changed else None
            operations.append(OperationChange(target.name, self.op_name(state, op_hash, host), changed, self.redact(diff)))

        if status_error:
            return HostResult(target.name, status_error[0], operations, status_error[1], commands)
        changed_any = any(op.changed for op in operations)
        return HostResult(target.name, "changed" if changed_any else "unchanged", operations, None, commands)

    def _disconnect(self, state: api.State) -> None:
        try:
            with api.run_context(state):
                api.disconnect_all(state)
        except Exception:
            log.debug("disconnect_all failed", exc_info=True)
        for host in state.inventory:
            api.close_ssh_client(host)


@contextmanager
def _timed(stage: str) -> Iterator[None]:
    """Logs (debug) how long a stage took: bench/bench_speed.py shows where a plan's time goes."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        log.debug("stage %s %.2f / %.2f s", stage, time.perf_counter() - wall, time.process_time() - cpu)


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
