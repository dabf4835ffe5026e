"""Converging the shared layer (base, PostgreSQL, Redis, Caddy) on fresh test hosts.

Prints medians over --runs fresh hosts of: `commonstack deploy --no-check` of those layers, versus
a plain `apt-get install` of the same packages on an identical fresh host (the ratio's target is
<= 1.3x), and the no-op re-converge of a converged host, `commonstack plan` finding nothing to
change (target <= 3 s). Needs root (test hosts).
Run: .venv/bin/python bench/bench_deploy.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from commonstack import testhosts  # noqa: E402
from commonstack.stacks.layers import layer  # noqa: E402
from tests.integration.stacks import cli, write_group  # noqa: E402

ONLY = ["--only", "base", "--only", "postgres", "--only", "redis", "--only", "caddy"]
INFRA_PACKAGES = [p.format(postgresql="15") for name in ("base", "postgres", "redis", "caddy") for p in layer(name).packages]


def ssh(host, command: str) -> None:
    known = Path(tempfile.mkstemp()[1])
    known.write_text(testhosts.known_hosts_line(host) + "\n")
    subprocess.run(
        ["ssh", "-i", str(host.key_path), "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", f"root@{host.address}", command],
        check=True, capture_output=True,
    )


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    os.environ.setdefault("COMMONSTACK_TESTHOSTS_DIR", tempfile.mkdtemp(prefix="bench-testhosts-"))
    inventories = Path(tempfile.mkdtemp(prefix="bench-inventories-"))
    deploys, installs, noops = [], [], []
    for run in range(runs):
        kit, plain = testhosts.up(f"bdk{run}", memory="2G"), testhosts.up(f"bda{run}", memory="2G")
        try:
            write_group(inventories, f"bench{run}", "small-group", {"server": kit})

            def converge(*command: str) -> None:
                result = cli(inventories, *command, f"bench{run}", *ONLY)
                assert result.returncode == 0, result.stdout + result.stderr

            deploys.append(timed(lambda: converge("deploy", "--yes", "--no-check")))
            installs.append(timed(lambda: ssh(plain, "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
                                              f"apt-get install -y -qq --no-install-recommends {' '.join(INFRA_PACKAGES)}")))
            noops += [timed(lambda: converge("plan")) for _ in range(3)]
        finally:
            testhosts.down(kit.name)
            testhosts.down(plain.name)
    deploy_median, install_median = statistics.median(deploys), statistics.median(installs)
    print(f"fresh converge (commonstack deploy)   median {deploy_median:6.1f} s   runs {[round(d, 1) for d in deploys]}")
    print(f"plain apt-get install, same packages  median {install_median:6.1f} s   runs {[round(d, 1) for d in installs]}")
    print(f"ratio                                 {deploy_median / install_median:6.2f}x  (target <= 1.3x)")
    print(f"no-op re-converge (plan)              median {statistics.median(noops):6.2f} s   (target <= 3 s)")


if __name__ == "__main__":
    main()
