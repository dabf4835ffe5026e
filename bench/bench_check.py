"""How long the health checks take: the whole suite for one host, and for 8 hosts in parallel.

Sets up, on fresh test hosts (needs root): one host of the small-group preset with the shared
layers (base, PostgreSQL, Redis, Caddy) and a group of 8 hosts with the base layer, deployed
side by side. Then prints medians over --runs of:

- the suite (`commonstack.checks.group.check_group`: SSH connections, pytest + testinfra in a
  subprocess, every check module, from already-sized plans), for one host (target <= 3 s) and
  for the 8 hosts at once (target <= 1.5x one host);
- the whole `commonstack check` command (a fresh process: CLI start, reading each host's
  facts, then the suite), for the same.

Runs are interleaved so that other load on the machine affects each figure alike; the load
average is printed with the figures. Run: .venv/bin/python bench/bench_check.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from commonstack import testhosts  # noqa: E402
from tests.integration.stacks import cli, write_group  # noqa: E402

INFRA = ["--only", "base", "--only", "postgres", "--only", "redis", "--only", "caddy"]
BASE = ["--only", "base"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    os.environ.setdefault("COMMONSTACK_TESTHOSTS_DIR", tempfile.mkdtemp(prefix="bench-testhosts-"))
    inventories = Path(tempfile.mkdtemp(prefix="bench-inventories-"))
    names = ["bchki", *[f"bchk{i}" for i in range(1, 9)]]
    try:
        with ThreadPoolExecutor(4) as pool:
            hosts = list(pool.map(lambda name: testhosts.up(name, memory="2G"), names))
        write_group(inventories, "one", "small-group", {"server": hosts[0]})
        write_group(inventories, "eight", "chat", {f"h{i}": h for i, h in enumerate(hosts[1:], 1)})
        started = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            deployed = list(pool.map(lambda args: cli(inventories, "deploy", *args, "--yes"),
                                     [("one", *INFRA), ("eight", *BASE)]))  # fmt: skip
        for result in deployed:
            assert result.returncode == 0, result.stdout + result.stderr
        print(f"setup: 9 hosts up, both groups deployed in {time.perf_counter() - started:.0f} s")
        measure(inventories, runs)
    finally:
        for name in names:
            testhosts.down(name)


def measure(inventories: Path, runs: int) -> None:
    from commonstack.checks.group import check_group  # imports pyinfra (gevent): only in this process
    from commonstack.deploys.converge import GroupConverger
    from commonstack.inventories.groups import group

    cases = {
        "one host, shared layers": ("one", INFRA[1::2]),
        "one host of 8, base": ("eight", BASE[1::2], "h1"),
        "8 hosts, base": ("eight", BASE[1::2]),
    }
    suites: dict[str, tuple] = {}
    for label, (name, layers, *limit) in cases.items():
        converger = GroupConverger(group(name, inventories), tuple(limit))
        suites[label] = (converger, converger.sized().plans, frozenset(layers))
    suite_times: dict[str, list[float]] = {label: [] for label in cases}
    command_times: dict[str, list[float]] = {label: [] for label in cases}
    verdicts: dict[str, str] = {}
    loads = [os.getloadavg()[0]]
    for _ in range(runs):
        for label, (converger, plans, only) in suites.items():
            start = time.perf_counter()
            results = check_group(converger, plans, only=only)
            suite_times[label].append(time.perf_counter() - start)
            failed = sum(r.outcome == "failed" for r in results)
            verdicts[label] = f"{len(results)} checks, {failed} failed"
        for label, (name, layers, *limit) in cases.items():
            args = [arg for layer in layers for arg in ("--only", layer)] + [a for h in limit for a in ("--host", h)]
            start = time.perf_counter()
            result = cli(inventories, "check", name, *args, timeout=300)
            command_times[label].append(time.perf_counter() - start)
            assert result.returncode in (0, 1), result.stdout + result.stderr
        loads.append(os.getloadavg()[0])

    one = statistics.median(suite_times["one host of 8, base"])
    print(f"{'':28} {'suite median':>12} {'runs':>40}   {'check command median':>20}")
    for label in cases:
        times = suite_times[label]
        print(f"{label:28} {statistics.median(times):11.2f}s {str([round(t, 2) for t in times]):>40}"
              f"   {statistics.median(command_times[label]):19.2f}s   ({verdicts[label]})")
    print(f"8 hosts / one of them: {statistics.median(suite_times['8 hosts, base']) / one:.2f}x (target <= 1.5x); "
          f"one host, shared layers: target <= 3 s")
    print(f"load average (1 min) during the runs: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
