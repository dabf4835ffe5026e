"""Helpers for integration tests that deploy stacks onto test hosts through the real CLI.

The CLI runs in a subprocess, as a volunteer runs it: the pyinfra runner patches gevent into
the process that imports it, which must not be pytest's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from commonstack.inventories.groups import Group
from commonstack.testhosts import TestHost
from commonstack.trial import TrialHost, write_try_group


def cli(inventories: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """`commonstack ARGS...` with the given inventories folder; never prompts."""
    env = dict(os.environ, COMMONSTACK_INVENTORIES=str(inventories))
    return subprocess.run(
        [sys.executable, "-m", "commonstack", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def write_group(
    inventories: Path,
    name: str,
    preset: str,
    hosts: dict[str, TestHost],
    overrides: dict | None = None,
    memory_mb: int | None = None,
) -> Group:
    """inventories/NAME/ for running test hosts: {profile host name: test host}."""
    pairs = [(TrialHost(n, h.name, memory_mb or h.memory_mb or 2048), h) for n, h in hosts.items()]
    return write_try_group(inventories, preset, pairs, name=name, overrides=overrides)


def deploy(inventories: Path, group: str, *extra: str) -> subprocess.CompletedProcess[str]:
    result = cli(inventories, "deploy", group, "--yes", *extra)
    assert result.returncode == 0, f"deploy failed:\n{result.stdout}\n{result.stderr}"
    return result


def check_results(inventories: Path, group: str, *extra: str) -> list[dict]:
    """`commonstack check GROUP --json` parsed: [{host, layer, check, outcome, message}]."""
    result = cli(inventories, "check", group, "--json", *extra, timeout=600)
    assert result.returncode in (0, 1), f"check could not run:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def failed_checks(results: list[dict]) -> list[str]:
    return [f"{r['host']} {r['layer']}: {r['check']} — {r['message']}" for r in results if r["outcome"] == "failed"]
