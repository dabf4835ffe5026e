"""How hardened a host is, measured as a new user would: Debian's `lynis` and `systemd-analyze security`.

On one fresh bookworm test host (2 GB): lynis's hardening index before anything is deployed, then
the small-group preset deployed (Nextcloud's prerequisites only: its release is not reachable
here), then lynis again and the exposure level of every unit the kit installs or writes, as
`systemd-analyze security` rates it (0 best, 10 worst; the kit's checks ask for <= 4.0), and what
the hardening checks cost: the time each of their commands takes on the host (medians of 3, less
a bare `ssh HOST true`). lynis comes from Debian's mirror onto the test host itself. Needs root
(test hosts).
Run: .venv/bin/python bench/bench_hardening.py
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import statistics
import time
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from commonstack import testhosts  # noqa: E402
from commonstack.checks.exposed_secrets import SCAN, secret_digests  # noqa: E402
from commonstack.stacks.kernel import read_command as read_kernel  # noqa: E402
from commonstack.stacks.layers import KERNEL_HARDENING  # noqa: E402
from commonstack.stacks.updates import PENDING_COMMAND  # noqa: E402
from tests.integration.stacks import cli, write_group  # noqa: E402

HOST = "hdbench"
UNITS = ("caddy", "coturn", "postgresql@15-main", "php8.2-fpm", "redis-server", "matrix-synapse",
         "nextcloud-cron", "coturn-certificate", "ssh", "fail2ban", "unattended-upgrades")  # fmt: skip
OVERRIDES = {"nextcloud": {"install": "prerequisites"}}
# What the hardening checks run on a host (their secret scan is timed with a stand-in digest).
CHECK_COMMANDS = {
    "systemd-analyze security (8 units)": "systemd-analyze security --no-pager caddy coturn coturn-certificate "
    "postgresql@15-main php8.2-fpm nextcloud-cron redis-server matrix-synapse >/dev/null",
    "fail2ban-client status": "fail2ban-client status >/dev/null",
    "sshd -T": "sshd -T >/dev/null",
    "pending security updates (apt-get -s)": PENDING_COMMAND,
    "needrestart -b": "needrestart -b -r l >/dev/null",
    "kernel settings": read_kernel(dict(KERNEL_HARDENING)),
}


def ssh(host, command: str, check: bool = True) -> str:
    known = Path(tempfile.mkstemp()[1])
    known.write_text(testhosts.known_hosts_line(host) + "\n")
    result = subprocess.run(
        ["ssh", "-i", str(host.key_path), "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", f"root@{host.address}", command],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise SystemExit(f"{command}: {result.stderr or result.stdout}")
    return result.stdout


def lynis(host) -> tuple[int, list[str]]:
    """lynis's hardening index, and its warnings."""
    ssh(host, "command -v lynis >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
              "apt-get install -y -qq --no-install-recommends lynis >/dev/null)")
    ssh(host, "lynis audit system --quick --no-colors >/dev/null 2>&1 || true")
    report = ssh(host, "cat /var/log/lynis-report.dat")
    index = int(re.search(r"^hardening_index=(\d+)", report, re.M)[1])
    warnings = re.findall(r"^warning\[\]=([^|]*)\|([^|]*)", report, re.M)
    return index, [f"{test}: {text}" for test, text in warnings]


def exposure(host, unit: str) -> str:
    output = ssh(host, f"systemd-analyze security --no-pager {unit} 2>&1 | tail -n 1", check=False).strip()
    found = re.search(r"Overall exposure level for \S+: (\S+ \S+)", output)
    return found[1] if found else f"(not rated: {output[-60:]})"


def timed(host, command: str, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        ssh(host, command, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    os.environ.setdefault("COMMONSTACK_TESTHOSTS_DIR", tempfile.mkdtemp(prefix="bench-testhosts-"))
    inventories = Path(tempfile.mkdtemp(prefix="bench-inventories-"))
    host = testhosts.up(HOST, memory="2G", trust_controller_ca=True)
    try:
        before, before_warnings = lynis(host)
        write_group(inventories, "hardening", "small-group", {"server": host}, overrides=OVERRIDES)
        result = cli(inventories, "deploy", "hardening", "--yes", "--no-check")
        if result.returncode != 0:
            raise SystemExit(f"deploy failed:\n{result.stdout}\n{result.stderr}")
        after, after_warnings = lynis(host)
        print(f"lynis hardening index: fresh bookworm host {before}, after deploying small-group {after}")
        for warning in after_warnings:
            print(f"  lynis warning after the deploy: {warning}")
        print("systemd-analyze security (exposure, lower is better; the checks ask for <= 4.0):")
        for unit in UNITS:
            print(f"  {unit:22} {exposure(host, unit)}")
        bare = timed(host, "true")
        spec = base64.b64encode(json.dumps(secret_digests({"x": "y" * 43})).encode()).decode()
        commands = {**CHECK_COMMANDS, "secret scan of /etc": f"python3 -c {shlex.quote(SCAN)} {spec} >/dev/null"}
        print(f"what the hardening checks run, on the host (median of 3, less a bare ssh of {bare:.2f} s):")
        for what, command in commands.items():
            print(f"  {what:40} {max(timed(host, command) - bare, 0):5.2f} s")
    finally:
        testhosts.down(host.name)


if __name__ == "__main__":
    main()
