"""The check report: a pytest plugin that records each check's verdict as JSON for
`commonstack check`, and the JUnit XML form of those verdicts for CI systems."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

import pytest

from commonstack.checks.runner import RESULTS_ENV, WRITTEN_FD_ENV
from commonstack.stacks.layers import LAYERS

_LAYER_OF_MODULE = {module: item.name for item in LAYERS for module in item.checks}
_results: list[dict] = []
_setup_seconds: dict[str, float] = {}  # a check's setup (its fixtures) counts in its time


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "setup" and report.outcome == "passed":
        _setup_seconds[item.nodeid] = report.duration
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _results.append(
            {
                "host": _host_name(item),
                "module": (module := item.module.__name__.rsplit(".", 1)[-1]),
                "layer": _LAYER_OF_MODULE.get(module, module),
                "check": item.originalname.removeprefix("test_").replace("_", " "),
                "outcome": report.outcome,
                "message": _reason(report, call),
                "line": item.location[1],
                "seconds": round(_setup_seconds.pop(item.nodeid, 0.0) + report.duration, 3),
            }
        )


def _host_name(item) -> str:
    """The testinfra host a check ran against (known from its parameters even when setup failed)."""
    callspec = getattr(item, "callspec", None)
    host = callspec.params.get("_testinfra_host") if callspec else None
    return host.backend.get_hostname() if host is not None else "controller"


def _reason(report, call) -> str:
    """One line: the assertion's message (the hint), a skip's reason, or what broke."""
    if report.passed:
        return ""
    if report.skipped and isinstance(report.longrepr, tuple):
        return report.longrepr[2].removeprefix("Skipped: ")
    failed_command = _failed_command(call)
    if failed_command:
        return failed_command
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash else str(report.longrepr)
    return text.splitlines()[0].removeprefix("AssertionError: ").removeprefix("RuntimeError: ") if text else ""


def _failed_command(call) -> str | None:
    """testinfra's `check_output` failing (or SSH dropping) says so with the command's own error,
    not with the repr of its result object."""
    if call.excinfo is None:
        return None
    for entry in reversed(call.excinfo.traceback):
        result = entry.frame.f_locals.get("out")
        if type(result).__name__ == "CommandResult":
            command = result.command.decode(errors="replace") if isinstance(result.command, bytes) else result.command
            said = (result.stderr or result.stdout).strip().splitlines()
            if result.rc == 255:
                return f"the SSH connection failed while running `{command}`: is the host still up?"
            return f"`{command}` failed (exit {result.rc})" + (f": {said[-1]}" if said else "")
    return None


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get(RESULTS_ENV)
    if not path or hasattr(session.config, "workerinput"):  # xdist's workers report to the main process
        return
    if exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):  # every check ran: a verdict each
        # Written beside, then renamed: a pytest stopped while writing leaves no half of the verdicts.
        with open(path + ".draft", "w") as handle:
            for result in _results:
                handle.write(json.dumps(result) + "\n")
        os.replace(path + ".draft", path)
    written = os.environ.get(WRITTEN_FD_ENV)
    if written:  # the runner waits for this pipe's end (runner.py): it reads the verdicts while pytest ends
        os.close(int(written))


def pytest_configure(config):
    written = os.environ.get(WRITTEN_FD_ENV)
    if written and not hasattr(config, "workerinput"):
        # No process a check starts holds the pipe open after pytest has closed its end.
        os.set_inheritable(int(written), False)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: without it, there are no workers
def pytest_testnodedown(node, error):
    """With pytest-xdist, each worker's results come back through its workeroutput."""
    _results.extend(node.workeroutput.get("commonstack_results", []))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """All checks of a host go to one worker: its module fixtures run once, hosts run side by side.

    (Marking tests with xdist_group and --dist loadgroup would say the same, but that silently
    stops grouping with pytest 9.2: pytest-xdist issue #1386.)
    """
    from xdist.scheduler import LoadScopeScheduling

    class ByHost(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            # testinfra's parameter: "checks/base.py::test_x[shell://vps]" -> "shell://vps"
            return nodeid.rpartition("[")[2].rstrip("]") if nodeid.endswith("]") else nodeid

    return ByHost(config, log)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    if hasattr(session.config, "workerinput"):
        session.config.workeroutput["commonstack_results"] = _results


def write_junit(results: Iterable, path: Path, name: str) -> None:
    """A JUnit XML file of check results: a test suite per host, a test case per check.

    Built from the (already redacted) results, never from pytest's own report, which would
    carry tracebacks and local values.
    """
    root = ET.Element("testsuites", name=name)
    by_host: dict[str, list] = {}
    for result in results:
        by_host.setdefault(result.host, []).append(result)
    for host, checks in by_host.items():
        suite = ET.SubElement(root, "testsuite", name=host, tests=str(len(checks)))
        suite.set("failures", str(sum(r.outcome == "failed" for r in checks)))
        suite.set("skipped", str(sum(r.outcome == "skipped" for r in checks)))
        for r in checks:
            case = ET.SubElement(suite, "testcase", classname=f"{host}.{r.layer}", name=r.check, time=f"{r.seconds:.3f}")
            if r.outcome == "failed":
                ET.SubElement(case, "failure", message=r.message).text = r.message
            elif r.outcome == "skipped":
                ET.SubElement(case, "skipped", message=r.message)
    totals = {k: sum(int(s.get(k)) for s in root) for k in ("tests", "failures", "skipped")}
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    path.write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")
