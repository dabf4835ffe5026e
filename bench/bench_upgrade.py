"""Benchmark `commonstack upgrade` of Synapse on a 1 GB test host: the total time of an upgrade
and of a rollback, and their downtime as a client sees it.

    python bench/bench_upgrade.py [--memory 1G] [--suite bookworm]

Needs root and PyPI (pip on the host, through the controller's CA). Boots a local test host
(temporary state dir), deploys the chat preset through the CLI with Synapse held at an older
release, then runs two upgrades through the CLI while a prober asks
https://matrix.bench.test/_matrix/client/versions (through Caddy, from this machine) every
0.2 s:

1. a rollback: the target is a TEST-ONLY BROKEN RELEASE (a unit drop-in on the test host makes
   Synapse 1.161.0 listen elsewhere: it starts and fails its health gate, as in
   tests/integration/test_upgrade_synapse.py), rolled back to 1.160.0;
2. the upgrade 1.160.0 -> the kit's current release.

Downtime: the seconds from the first unanswered probe to the next answered one, summed over the
run. Total: the CLI's wall time, most of it the new release's virtualenv being built while the old
release keeps serving. One run of each (each needs a host in the older release): run it again
for more figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

from commonstack import testhosts
from commonstack.checks.probes import https_request
from commonstack.testhosts import cgroups
from commonstack.testhosts.files import remove_tree

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from scratch import scratch_folder  # noqa: E402  (bench/ is on sys.path when a bench runs)
from tests.integration.stacks import write_group  # noqa: E402
from tests.integration.test_upgrade_synapse import BROKEN, BROKEN_DROP_IN, BROKEN_RELEASE, OLD  # noqa: E402

CADDY_ROOT = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"
PROBE_SECONDS = 0.2


def cli(inventories: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COMMONSTACK_INVENTORIES=str(inventories))
    return subprocess.run([sys.executable, "-m", "commonstack", *args], capture_output=True, text=True, env=env)


def on_host(host, command: str) -> str:
    ssh = ["ssh", "-i", str(host.key_path), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
           "-o", "LogLevel=ERROR", f"root@{host.address}", command]  # fmt: skip
    return subprocess.run(ssh, check=True, capture_output=True, text=True, timeout=120).stdout


class Prober:
    """Asks the client API through Caddy every PROBE_SECONDS; keeps when it did not answer."""

    def __init__(self, address: str, name: str, context: ssl.SSLContext):
        self.address, self.name, self.context = address, name, context
        self.samples: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            at = time.monotonic()
            try:
                status, _, _ = https_request(self.address, self.name, self.context, path="/_matrix/client/versions",
                                             timeout=1)  # fmt: skip
                ok = status == 200
            except OSError:
                ok = False
            self.samples.append((at, ok))
            self._stop.wait(max(0.0, PROBE_SECONDS - (time.monotonic() - at)))

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def downtime(self) -> tuple[float, int]:
        """(seconds without an answer, number of outages)."""
        total, outages, down_since = 0.0, 0, None
        for at, ok in self.samples:
            if not ok and down_since is None:
                down_since, outages = at, outages + 1
            elif ok and down_since is not None:
                total, down_since = total + (at - down_since), None
        if down_since is not None:
            total += self.samples[-1][0] - down_since
        return total, outages


def timed_upgrade(inventories: Path, host, caddy_root: str) -> dict:
    context = ssl.create_default_context(cadata=caddy_root)
    with Prober(host.address, "matrix.bench.test", context) as prober:
        time.sleep(2)  # answered before
        started = time.monotonic()
        result = cli(inventories, "upgrade", "bench", "--only", "synapse", "-y")
        total = time.monotonic() - started
        time.sleep(2)
    downtime, outages = prober.downtime()
    verdict = next((line for line in result.stdout.splitlines() if "synapse UPGRADED" in line or "ROLLED BACK" in line),
                   result.stdout[-500:])  # fmt: skip
    return {"total_s": round(total, 1), "downtime_s": round(downtime, 1), "outages": outages,
            "probes": len(prober.samples), "verdict": verdict}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--memory", default="1G", help="the test host's memory limit (the profile is sized for it)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    scratch = scratch_folder("bench-upgrade-")
    if scratch is None:
        return 2
    inventories = scratch / "inventories"
    figures = {}
    try:
        host = testhosts.up("upbench", suite=args.suite, memory=args.memory, trust_controller_ca=True)
        memory_mb = cgroups.parse_memory(args.memory)

        def hold(version: str | None) -> None:
            overrides = {"domain": "bench.test", "admin_email": "admin@bench.test"}
            if version:
                overrides["matrix"] = {"version": version}
            write_group(inventories, "bench", "chat", {"server": host}, overrides=overrides, memory_mb=memory_mb)

        hold(OLD)
        deployed = cli(inventories, "deploy", "bench", "--yes", "--no-check")
        if deployed.returncode != 0:
            print(deployed.stdout[-3000:], deployed.stderr[-2000:], file=sys.stderr)
            return 1
        caddy_root = on_host(host, f"cat {CADDY_ROOT}")

        hold(BROKEN)
        on_host(host, f"mkdir -p /etc/matrix-synapse-test {BROKEN_DROP_IN.rsplit('/', 1)[0]} && cat > {BROKEN_DROP_IN} "
                      f"<<'EOF'\n{BROKEN_RELEASE}EOF\nsystemctl daemon-reload && systemctl restart matrix-synapse")  # fmt: skip
        time.sleep(10)
        figures["rollback"] = timed_upgrade(inventories, host, caddy_root)
        on_host(host, f"rm -f {BROKEN_DROP_IN} && systemctl daemon-reload && systemctl restart matrix-synapse")
        time.sleep(10)

        hold(None)
        figures["upgrade"] = timed_upgrade(inventories, host, caddy_root)
        current = on_host(host, "readlink /opt/synapse/venv").strip()
    finally:
        for running in testhosts.list_hosts():
            testhosts.down(running.name)
        remove_tree(scratch)

    print(f"\n== Synapse upgrade on a {args.memory} {args.suite} test host (chat preset), one run each ==")
    rollback, upgrade = figures["rollback"], figures["upgrade"]
    print(f"rollback ({OLD} -> test-only broken {BROKEN} -> {OLD}): total {rollback['total_s']:.0f} s, "
          f"client API unanswered {rollback['downtime_s']:.1f} s ({rollback['outages']} outage(s))")
    print(f"  {rollback['verdict']}")
    print(f"upgrade ({OLD} -> {current.removeprefix('venv-')}): total {upgrade['total_s']:.0f} s, "
          f"client API unanswered {upgrade['downtime_s']:.1f} s ({upgrade['outages']} outage(s))")
    print(f"  {upgrade['verdict']}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
