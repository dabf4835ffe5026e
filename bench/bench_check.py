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
average is printed with the figures (test hosts share this machine's CPUs with the controller:
on real hosts their side of the work is elsewhere). Run: .venv/bin/python bench/bench_check.py
[--runs 7] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the hosts and write the groups into DIR; a later run with the same DIR "
                             "measures them again without setting them up")  # fmt: skip
    options = parser.parse_args()
    os.environ.setdefault("COMMONSTACK_TESTHOSTS_DIR", str(options.keep / "testhosts") if options.keep
                          else tempfile.mkdtemp(prefix="bench-testhosts-"))  # fmt: skip
    inventories = options.keep or Path(tempfile.mkdtemp(prefix="bench-inventories-"))
    names = ["bchki", *[f"bchk{i}" for i in range(1, 9)]]
    running = {h.name for h in testhosts.list_hosts() if h.status == "running"}
    try:
        if not set(names) <= running or not (inventories / "eight" / "stack.yaml").exists():
            set_up(inventories, names)
        measure(inventories, options.runs)
    finally:
        if not options.keep:
            for name in names:
                testhosts.down(name)


def set_up(inventories: Path, names: list[str]) -> None:
    """One host with the shared layers (group 'one'), 8 hosts with the base layer (group 'eight')."""
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


def measure(inventories: Path, runs: int) -> None:
    from commonstack.checks.group import check_group
    from commonstack.deploys.converge import GroupConverger  # imports pyinfra (gevent): only in this process
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
    cpu: dict[str, list[tuple[float, float]]] = {label: [] for label in cases}
    command_times: dict[str, list[float]] = {label: [] for label in cases}
    verdicts: dict[str, str] = {}
    loads = [os.getloadavg()[0]]
    for _ in range(runs):
        for label, (converger, plans, only) in suites.items():
            controller, hosts, start = _controller_cpu(), _hosts_cpu(plans), time.perf_counter()
            results = check_group(converger.targets, plans, converger.secrets, only)
            suite_times[label].append(time.perf_counter() - start)
            cpu[label].append((_controller_cpu() - controller, _hosts_cpu(plans) - hosts))
            failed = sum(r.outcome == "failed" for r in results)
            verdicts[label] = f"{len(results)} checks, {failed} failed"
        for label, (name, layers, *limit) in cases.items():
            args = [arg for layer in layers for arg in ("--only", layer)] + [a for h in limit for a in ("--host", h)]
            start = time.perf_counter()
            result = cli(inventories, "check", name, *args, timeout=300)
            command_times[label].append(time.perf_counter() - start)
            assert result.returncode in (0, 1), result.stdout + result.stderr
        loads.append(os.getloadavg()[0])

    print(f"{'':26} {'suite':>6} {'CPU: controller':>16} {'hosts':>6} {'command':>8}   suite runs")
    for label in cases:
        controller_cpu = statistics.median(c for c, _ in cpu[label])
        hosts_cpu = statistics.median(h for _, h in cpu[label])
        print(f"{label:26} {statistics.median(suite_times[label]):5.2f}s {controller_cpu:15.2f}s {hosts_cpu:5.2f}s "
              f"{statistics.median(command_times[label]):7.2f}s   {[round(t, 2) for t in suite_times[label]]}"
              f"  ({verdicts[label]})")
    one = statistics.median(suite_times["one host of 8, base"])
    print(f"8 hosts / one of them: {statistics.median(suite_times['8 hosts, base']) / one:.2f}x (target <= 1.5x); "
          "one host, shared layers: target <= 3 s (medians)")
    print(f"load average (1 min) during the runs: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs")


def _controller_cpu() -> float:
    """CPU seconds of this process's finished children: ssh, pytest and its workers."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _hosts_cpu(plans: dict) -> float:
    """CPU seconds the test hosts spent (their cgroups): on real hosts, not this machine's."""
    from commonstack.testhosts.paths import owner_tag

    total = 0.0
    for host in testhosts.list_hosts():
        if any(plan.host.address == host.address for plan in plans.values()):
            stat = Path("/sys/fs/cgroup/unified") / f"commonstack-{owner_tag()}" / host.name / "cpu.stat"
            if stat.exists():
                total += int(stat.read_text().split()[1]) / 1e6  # usage_usec
    return total


if __name__ == "__main__":
    main()
