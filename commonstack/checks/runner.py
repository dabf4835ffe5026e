"""Running the health checks: pytest + testinfra in a subprocess, over SSH with pinned keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from commonstack.checks.expect import NOT_HERE
from commonstack.errors import CommonstackError

CHECKS_DIR = Path(__file__).parent
MODULES = ("base", "postgres", "redis", "proxy")


@dataclass(frozen=True)
class SshHost:
    """How the checks reach a host: the same identity and pinned key as deploys."""

    name: str
    address: str
    port: int
    user: str
    key_path: Path | None
    known_hosts: Path


@dataclass(frozen=True)
class CheckResult:
    host: str
    service: str
    check: str
    outcome: str  # passed | failed | skipped
    message: str


def ssh_config(hosts: list[SshHost]) -> str:
    """An ssh_config with one alias per host, so testinfra's `ssh://NAME` is strict and key-only."""
    blocks = []
    for h in hosts:
        lines = [
            f"Host {h.name}",
            f"  HostName {h.address}",
            f"  Port {h.port}",
            f"  User {h.user}",
            f"  UserKnownHostsFile {h.known_hosts.resolve()}",
            "  StrictHostKeyChecking yes",
            "  BatchMode yes",
            "  LogLevel ERROR",
        ]
        if h.key_path:
            lines += [f"  IdentityFile {h.key_path.resolve()}", "  IdentitiesOnly yes"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def run_checks(
    hosts: list[SshHost],
    expectations: dict,
    modules: tuple[str, ...] = MODULES,
    controller: dict | None = None,
) -> list[CheckResult]:
    """Run the check modules against every host (in parallel when several) and collect verdicts."""
    with tempfile.TemporaryDirectory(prefix="commonstack-check-") as tmp:
        folder = Path(tmp)
        (folder / "ssh_config").write_text(ssh_config(hosts))
        context = {"hosts": expectations, "controller": controller or {}}
        (folder / "context.json").write_text(json.dumps(context))
        results_file = folder / "results.jsonl"
        env = dict(
            os.environ,
            COMMONSTACK_CHECK_CONTEXT=str(folder / "context.json"),
            COMMONSTACK_CHECK_RESULTS=str(results_file),
        )
        command = [
            sys.executable, "-m", "pytest", "-q", "--no-header", "-p", "no:cacheprovider",
            "-p", "commonstack.checks.report", f"--rootdir={CHECKS_DIR}",
            "--hosts=" + ",".join(f"ssh://{h.name}" for h in hosts),
            f"--ssh-config={folder / 'ssh_config'}",
            *([f"-n={min(len(hosts) * 2, 8)}"] if len(hosts) > 1 else []),
            *[str(CHECKS_DIR / f"{m}.py") for m in modules],
        ]
        completed = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp)
        if completed.returncode not in (0, 1) or not results_file.exists():  # 0/1: ran, passed/failed
            tail = (completed.stdout + completed.stderr).strip().splitlines()[-3:]
            raise CommonstackError("the checks could not run: " + " / ".join(tail))
        rows = [json.loads(line) for line in results_file.read_text().splitlines()]
    results = [CheckResult(**row) for row in rows]
    return [r for r in results if not (r.outcome == "skipped" and r.message.endswith(NOT_HERE))]
