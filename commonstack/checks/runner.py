"""Running the health checks: pytest + testinfra in a subprocess, over SSH with pinned keys.

Each host gets one multiplexed SSH connection (opened before any check runs, all at once, so
an unreachable host or a changed host key is one clear failure instead of one per check), and
its commands go through a shell kept open on it (shell.py); pytest-xdist runs the hosts in
parallel. Results come back through the report plugin (report.py) as JSON lines.

A run starts before its expectations are known, in three steps. `CheckRun()` starts pytest,
which imports what the checks need (launch.py) while the caller loads the profile; `begin` names
the hosts and modules, and pytest collects the checks while the connections open, each saying
what its host is (`CheckRun.reports`); the caller plans the hosts from that, and `finish` gives
the checks their expectations (conftest.py waits for the file) and collects the verdicts.
`start_checks` does the first two steps at once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from commonstack.checks.expect import NOT_HERE
from commonstack.errors import CommonstackError
from commonstack.inventories.openssh import ssh_config
from commonstack.inventories.secrets import redact
from commonstack.stacks.host_report import REPORT_COMMAND
from commonstack.stacks.layers import check_modules

if TYPE_CHECKING:
    from commonstack.inventories.targets import HostTarget

CHECKS_DIR = Path(__file__).parent
# pytest-xdist workers, one per host up to this. Each is a Python process that costs about 0.6 s
# of CPU to start, and a host's checks now wait little on the network: more workers than CPUs only
# make the run slower (8 hosts on 2 CPUs, three runs each: 5.2-5.4 s with 2 workers, 6.0-6.7 s
# with 4); two at least, as remote hosts' checks still wait on them.
MAX_WORKERS = min(8, max(2, len(os.sched_getaffinity(0))))
# Only the plugins the checks need: autoloading every installed plugin (hypothesis, ...) costs seconds.
# pytest-xdist only for several hosts: its import costs one host's checks a tenth of a second.
PLUGINS = ("testinfra.plugin", "commonstack.checks.report", "commonstack.checks.shell")
PARALLEL_PLUGIN = "xdist.plugin"
LAUNCHER = "commonstack.checks.launch"  # pytest, importing while its command line is not known yet
RUN_LAST = "base"  # the check module pytest runs last (see `run_order`)
CONTEXT_FILE = "context.json"  # what each host should run (conftest.py waits for it)
RESULTS_FILE = "results.jsonl"
OUTPUT_FILE = "pytest.out"
# Where pytest finds those files and the pipe's write end, which report.py closes once the
# verdicts are written (the runner waits for that); conftest.py and report.py read them.
CONTEXT_ENV = "COMMONSTACK_CHECK_CONTEXT"
RESULTS_ENV = "COMMONSTACK_CHECK_RESULTS"
WRITTEN_FD_ENV = "COMMONSTACK_CHECK_WRITTEN_FD"
TEARDOWN_WAIT = 10  # seconds a pytest that gave no verdict has to end and say why


@dataclass(frozen=True)
class CheckResult:
    host: str
    layer: str  # the layer the check belongs to ("ssh" when the host cannot be reached)
    check: str
    outcome: str  # passed | failed | skipped
    message: str
    seconds: float = 0.0  # how long it took (its fixtures' share included)


def run_checks(
    hosts: list[HostTarget],
    expectations: dict,
    modules: tuple[str, ...] | None = None,
    controller: dict | None = None,
    secrets: list[str] | None = None,
) -> list[CheckResult]:
    """Run the check modules against every host (in parallel when several) and collect verdicts.

    Any of the `secrets` (the group's secrets) that a message contains is replaced by
    ********, so no output built from the results can show one.
    """
    return start_checks(hosts, modules, controller, secrets).finish(expectations)


def start_checks(
    hosts: list[HostTarget],
    modules: tuple[str, ...] | None = None,
    controller: dict | None = None,
    secrets: list[str] | None = None,
) -> CheckRun:
    """Start pytest and open the hosts' connections; `finish` gives it the expectations."""
    return CheckRun().begin(hosts, modules or check_modules(), controller or {}, list(secrets or []))


class CheckRun:
    """One run of the checks: pytest starts first, then learns the hosts (`begin`), then their
    expectations (`finish`).

    pytest imports what it and the checks need (launch.py) while the caller loads the profile,
    and gets its command line when `begin` names the hosts and modules.
    """

    def __init__(self) -> None:
        self.hosts: list[HostTarget] = []
        self.modules: tuple[str, ...] = ()
        self.controller: dict = {}
        self.secrets: list[str] = []
        self.folder = Path(tempfile.mkdtemp(prefix="commonstack-check-"))
        self.config = self.folder / "ssh_config"
        self.process: subprocess.Popen | None = None  # before anything that may fail: close() reads them
        self.written: int | None = None  # a pipe's end: it ends when pytest has written its verdicts
        self.connecting: dict[str, subprocess.Popen] = {}
        self._refused: dict[str, str] | None = None  # once the connections are open: {name: why}
        try:
            self.process, self.written = _start_pytest(self.folder)
        except BaseException:
            self.close()
            raise

    def begin(self, hosts: list[HostTarget], modules: tuple[str, ...], controller: dict, secrets: list[str]) -> CheckRun:
        """Give pytest the hosts and the check modules, and open the hosts' connections."""
        self.hosts, self.modules, self.controller, self.secrets = hosts, modules, controller, secrets
        try:
            self.config.write_text(ssh_config(hosts, control_dir=self.folder))
            # pytest collects while the connections open: it sends nothing before the
            # expectations, which name only the hosts that could be reached (the others' checks skip).
            _send_command_line(self.process, pytest_arguments(self.config, hosts, modules))
            self.connecting = _connect(hosts, self.config, self.folder)
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> CheckRun:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()  # when the caller failed before `finish`: nothing keeps running

    def unreachable(self) -> dict[str, str]:
        """{name: why} of the hosts whose connection failed (once they are all open or failed)."""
        if self._refused is None:
            self._refused = _connected(self.connecting, self.folder)
        return dict(self._refused)

    def reports(self) -> dict[str, list[str]]:
        """What each host reached is (host_report.REPORT_COMMAND's answer, read as it opened), by name."""
        refused = self.unreachable()
        return {
            h.name: (self.folder / f"{h.name}.report").read_text(errors="replace").splitlines()
            for h in self.hosts
            if h.name not in refused
        }

    def finish(self, expectations: dict) -> list[CheckResult]:
        """Give the checks what each host should run (hosts left out of `expectations` are not
        checked: their verdicts are dropped) and collect the verdicts."""
        try:
            unreachable = self.unreachable()
            rows = self._rows({n: e for n, e in expectations.items() if n not in unreachable})
        finally:
            self.close()
        results = [CheckResult(n, "ssh", "host can be reached", "failed", why)
                   for n, why in unreachable.items() if n in expectations]  # fmt: skip
        host_order = {h.name: i for i, h in enumerate(self.hosts)}
        module_order = {m: i for i, m in enumerate(self.modules)}
        rows.sort(key=lambda r: (host_order.get(r["host"], len(self.hosts)), module_order.get(r["module"], len(self.modules)),
                                 r.get("line", 0)))  # fmt: skip
        for row in rows:
            if row["host"] in expectations:
                results.append(CheckResult(row["host"], row["layer"], row["check"], row["outcome"], row["message"], row["seconds"]))
        results = [r for r in results if not (r.outcome == "skipped" and r.message.endswith(NOT_HERE))]
        return [_redacted(r, self.secrets) for r in results] if self.secrets else results

    def _rows(self, expectations: dict) -> list[dict]:
        if not self.process.stdin.closed:
            raise RuntimeError("CheckRun.finish before begin: pytest has no command line")  # it would wait forever
        context = {"hosts": expectations, "controller": self.controller}
        # The expectations may hold a credential a check logs in with: readable by this user only.
        # Written beside, then renamed: the checks wait for the file and must never read half of it.
        draft = self.folder / "context.json.draft"
        draft.touch(mode=0o600)
        draft.write_text(json.dumps(context))
        draft.replace(self.folder / CONTEXT_FILE)
        # The verdicts are read as soon as pytest has written them (or ended without): its own
        # teardown (closing the hosts' shells, collecting its garbage), a tenth of a second, is cut
        # short by `close`. Nothing is written to the pipe: the read returns at its end.
        os.read(self.written, 1)
        results_file = self.folder / RESULTS_FILE
        if not results_file.exists():  # written whole, only when every check ran (report.py)
            try:
                self.process.wait(timeout=TEARDOWN_WAIT)  # for its last words
            except subprocess.TimeoutExpired:
                pass  # `close` stops it
            tail = " / ".join((self.folder / OUTPUT_FILE).read_text().strip().splitlines()[-3:])
            raise CommonstackError(f"the checks could not run: {redact(tail, self.secrets)}")
        return [json.loads(line) for line in results_file.read_text().splitlines()]

    def close(self) -> None:
        """Stop pytest if it still runs, close the connections, remove the run's folder (once)."""
        if not self.folder.exists():
            return
        for process in [self.process, *self.connecting.values()]:
            if process and process.poll() is None:
                process.kill()
                process.wait()
        if self.process and self.process.stdin:
            _close_quietly(self.process.stdin)  # open still when `begin` was never called
        if self.written is not None:
            os.close(self.written)
            self.written = None
        _disconnect(self.hosts, self.config)
        shutil.rmtree(self.folder, ignore_errors=True)


def _connect(hosts: list[HostTarget], config: Path, folder: Path) -> dict[str, subprocess.Popen]:
    """Begin opening each host's shared connection, all at once, its first command reading what
    the host is (host_report.REPORT_COMMAND: the caller sizes it from that); `_connected` waits for them."""
    started = {}
    for h in hosts:
        # Files, not pipes: nobody reads a pipe meanwhile.
        with open(folder / f"{h.name}.report", "w") as answer, open(folder / f"{h.name}.connect", "w") as said:
            started[h.name] = subprocess.Popen(["ssh", "-F", str(config), h.name, REPORT_COMMAND],
                                               stdin=subprocess.DEVNULL, stdout=answer, stderr=said)  # fmt: skip
    return started


def _connected(started: dict[str, subprocess.Popen], folder: Path) -> dict[str, str]:
    """{name: why} of the hosts that refused the connection `_connect` began."""
    failed = {}
    for name, process in started.items():
        if process.wait() != 0:
            failed[name] = _connection_hint((folder / f"{name}.connect").read_text(errors="replace"))
    return failed


def _connection_hint(stderr: str) -> str:
    said = " ".join(stderr.split()) or "no answer"
    if "Host key verification failed" in said or "REMOTE HOST IDENTIFICATION HAS CHANGED" in said:
        return (f"{said}: the host's key is not the one pinned in known_hosts; if the server was "
                "reinstalled, compare its new fingerprint and run `commonstack pin-keys`")
    if "Permission denied" in said:
        return f"{said}: is the SSH key of this host in the profile (hosts[].ssh_key) allowed to log in?"
    return f"{said}: is the host up, and is its SSH port open in your provider's firewall?"


def _disconnect(hosts: list[HostTarget], config: Path) -> None:
    closing = [
        subprocess.Popen(["ssh", "-F", str(config), "-O", "exit", h.name],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for h in hosts
    ]  # fmt: skip
    for process in closing:
        process.wait()


def _start_pytest(folder: Path) -> tuple[subprocess.Popen, int]:
    """pytest, started and waiting for its command line (launch.py), and the read end of a pipe
    whose write end pytest alone holds, and closes once it has written its verdicts (report.py)."""
    written, pytest_end = os.pipe()
    env = {
        **os.environ,
        CONTEXT_ENV: str(folder / CONTEXT_FILE),
        RESULTS_ENV: str(folder / RESULTS_FILE),
        WRITTEN_FD_ENV: str(pytest_end),
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    # Output to a file, not a pipe: nobody reads a pipe while the caller is busy reading facts.
    try:
        with open(folder / OUTPUT_FILE, "w") as output:
            process = subprocess.Popen([sys.executable, "-m", LAUNCHER], env=env, cwd=folder, stdin=subprocess.PIPE,
                                       stdout=output, stderr=subprocess.STDOUT, pass_fds=(pytest_end,))  # fmt: skip
    except BaseException:
        os.close(written)
        raise
    finally:
        os.close(pytest_end)  # pytest's copy alone: the pipe ends when pytest closes it, or exits
    return process, written


def pytest_arguments(config: Path, hosts: list[HostTarget], modules: tuple[str, ...]) -> list[str]:
    """pytest's command line: these modules' checks of these hosts, through the `config` ssh_config."""
    # A worker per host (report.py's scheduler keeps each host's checks together); one worker needs no xdist.
    workers = min(len(hosts), MAX_WORKERS)
    parallel = ["-p", PARALLEL_PLUGIN, "-n", str(workers)] if workers > 1 else []
    return [
        "-q", "--no-header", "-p", "no:cacheprovider",
        *[arg for plugin in PLUGINS for arg in ("-p", plugin)],
        "-c", os.devnull, f"--rootdir={CHECKS_DIR}",  # no project settings: the checks stand alone
        "--hosts=" + ",".join(f"shell://{h.name}" for h in hosts),
        f"--ssh-config={config}",
        *parallel,
        *[str(CHECKS_DIR / f"{m}.py") for m in run_order(modules)],
    ]  # fmt: skip


def _send_command_line(process: subprocess.Popen, arguments: list[str]) -> None:
    try:
        process.stdin.write(json.dumps(arguments).encode() + b"\n")
    except BrokenPipeError:
        pass  # it ended already: its output says why (`_rows`)
    finally:
        _close_quietly(process.stdin)


def _close_quietly(stream) -> None:
    try:
        stream.close()
    except OSError:  # what it still held could not be written: its reader is gone
        pass


def run_order(modules: tuple[str, ...]) -> list[str]:
    """The modules in the order pytest runs them: base's checks last, as they wait on the host's
    slowest commands (needrestart, a quarter of a second), started at its first check (ahead.py,
    conftest.py's head_start), which end while the other modules' checks run. The verdicts keep
    the modules' own order (`finish`)."""
    return sorted(modules, key=lambda module: module == RUN_LAST)


def _redacted(result: CheckResult, secrets: list[str]) -> CheckResult:
    message = redact(result.message, secrets)
    return result if message == result.message else CheckResult(**{**result.__dict__, "message": message})
