"""A pytest plugin that records each check's verdict as JSON for `commonstack check`."""

from __future__ import annotations

import json
import os

import pytest

_results: list[dict] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        host = item.funcargs.get("host") if hasattr(item, "funcargs") else None
        _results.append(
            {
                "host": host.backend.get_hostname() if host else "controller",
                "service": item.module.__name__.rsplit(".", 1)[-1],
                "check": item.originalname.removeprefix("test_").replace("_", " "),
                "outcome": report.outcome,
                "message": _reason(report),
            }
        )


def _reason(report) -> str:
    if report.passed:
        return ""
    if report.skipped and isinstance(report.longrepr, tuple):
        return report.longrepr[2].removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash else str(report.longrepr)
    return text.splitlines()[0].removeprefix("AssertionError: ") if text else ""


def pytest_sessionfinish(session):
    path = os.environ.get("COMMONSTACK_CHECK_RESULTS")
    if path and not hasattr(session.config, "workerinput"):
        with open(path, "a") as handle:
            for result in _results:
                handle.write(json.dumps(result) + "\n")


def pytest_testnodedown(node, error):
    """With pytest-xdist, each worker's results come back through its workeroutput."""
    _results.extend(node.workeroutput.get("commonstack_results", []))


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    if hasattr(session.config, "workerinput"):
        session.config.workeroutput["commonstack_results"] = _results
